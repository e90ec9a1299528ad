"""A catalogue of small valid Pyro model/guide pairs, written for the conformance suite.

Each case is the kind of model that Pyro users write and that Pyro's ``Trace_ELBO``
trains: global latents, plates of any name, nested and subsampled plates,
``poutine.scale``, masks, ``to_event``, factors and observed sites in the model and in
the guide, shared parameters, sequential plates, discrete and constrained latents,
data passed by keyword or closed over, and models whose code cannot be vectorized.

A :class:`Case` builds a fresh pair (after ``pyro.clear_param_store()``):
``model``, ``guide``, ``args`` and ``kwargs``. Its flags:

* ``discrete``: every latent is discrete (binary), so exact answers by enumeration;
* ``reparam``: every latent guide site has ``rsample``;
* ``guide_only``: the guide has observed sites or factors;
* ``dynamic``: the code cannot be vectorized over particles;
* ``no_obs_arg``: no argument of the model holds its observed data (closed over);
* ``factor``: the model has a ``pyro.factor`` site;
* ``convention``: one continuous latent ``"z"`` of shape ``(batch, dim)`` under a data plate
  (what MCEM and MCMC-refined training support).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints

X4 = torch.tensor([0.3, -1.2, 0.8, 2.0])
X6 = torch.tensor([0.5, -0.4, 1.7, -2.1, 0.9, 0.1])
BITS = torch.tensor([1.0, 0.0, 1.0, 1.0])


@dataclass
class Case:
    name: str
    model: Callable
    guide: Callable
    args: tuple = ()
    kwargs: dict | None = None
    discrete: bool = False
    reparam: bool = True
    guide_only: bool = False
    dynamic: bool = False
    no_obs_arg: bool = False
    factor: bool = False
    convention: bool = False

    def __post_init__(self):
        self.kwargs = self.kwargs or {}

    def __repr__(self) -> str:
        return self.name


CASES: list[Case] = []


def case(name: str, args: tuple = (), kwargs: dict | None = None, **flags):
    """Registers the decorated ``fn() -> (model, guide)`` as a case."""
    def register(fn):
        model, guide = fn()
        CASES.append(Case(name, model, guide, args, kwargs, **flags))
        return fn
    return register


def _loc(name, init=0.0, shape=()):
    return pyro.param(name, torch.full(shape, init) if shape else torch.tensor(init))


def _scale(name, init=1.0, shape=()):
    value = torch.full(shape, init) if shape else torch.tensor(init)
    return pyro.param(name, value, constraint=constraints.positive)


def _prob(name, init=0.5, shape=()):
    value = torch.full(shape, init) if shape else torch.tensor(init)
    return pyro.param(name, value, constraint=constraints.unit_interval)


# ------------------------------------------------------------------ no plates


@case("normal_normal_global", args=(torch.tensor(0.7),))
def _():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(_loc("q_loc"), _scale("q_scale")))
    return model, guide


@case("bernoulli_global", args=(torch.tensor(1.0),), discrete=True, reparam=False)
def _():
    def model(x):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x):
        pyro.sample("z", dist.Bernoulli(_prob("q_p", 0.6)))
    return model, guide


@case("beta_bernoulli", args=(BITS,))
def _():
    def model(x):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("flips", len(x)):
            pyro.sample("x", dist.Bernoulli(p), obs=x)

    def guide(x):
        pyro.sample("p", dist.Beta(_scale("q_a", 3.0), _scale("q_b", 2.0)))
    return model, guide


@case("gamma_poisson", args=(torch.tensor([2.0, 0.0, 3.0, 1.0]),))
def _():
    def model(x):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with pyro.plate("counts", len(x)):
            pyro.sample("x", dist.Poisson(rate), obs=x)

    def guide(x):
        pyro.sample("rate", dist.Gamma(_scale("q_c", 3.0), _scale("q_r", 2.0)))
    return model, guide


@case("lognormal_latent", args=(X4,))
def _():
    def model(x):
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, s), obs=x)

    def guide(x):
        pyro.sample("s", dist.LogNormal(_loc("q_loc"), _scale("q_scale", 0.5)))
    return model, guide


@case("unplated_vector_to_event", args=(X4,))
def _():
    def model(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(4), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(_loc("q_loc", 0.0, (4,)), _scale("q_scale", 1.0, (4,))).to_event(1))
    return model, guide


@case("no_observations")
def _():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(_loc("q_loc", 0.3), _scale("q_scale", 0.8)))
    return model, guide


@case("empty_guide", args=(X4,))
def _():
    def model(x):
        loc = _loc("m_loc")
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass
    return model, guide


@case("delta_guide_map", args=(X4,))
def _():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Delta(_loc("q_mu", 0.2)))
    return model, guide


# ------------------------------------------------------------------ global + local


@case("bayesian_regression", args=(X6, torch.linspace(-1, 1, 6)))
def _():
    def model(y, t):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("obs", len(y)):
            pyro.sample("y", dist.Normal(w * t + b, 0.5), obs=y)

    def guide(y, t):
        pyro.sample("w", dist.Normal(_loc("q_w"), _scale("q_ws", 0.5)))
        pyro.sample("b", dist.Normal(_loc("q_b"), _scale("q_bs", 0.5)))
    return model, guide


@case("hierarchical_global_local", args=(X6,))
def _():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        mu = pyro.sample("mu", dist.Normal(_loc("q_mu"), _scale("q_mus", 0.5)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x + 0.5 * mu, _scale("q_zs", 0.6)))
    return model, guide


@case("discrete_global_local", args=(torch.tensor([0.9, -1.1]),), discrete=True, reparam=False)
def _():
    def model(x):
        beta = pyro.sample("beta", dist.Bernoulli(0.4))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(beta + 2.0 * z - 1.0, 1.0), obs=x)

    def guide(x):
        beta = pyro.sample("beta", dist.Bernoulli(_prob("q_beta", 0.5)))
        with pyro.plate("data", len(x)):
            p = torch.sigmoid(_loc("q_z0", 0.0, (len(x),)) + _loc("q_z1", 0.3) * beta)
            pyro.sample("z", dist.Bernoulli(p))
    return model, guide


@case("mixture_global_weights", args=(X6,), reparam=False)
def _():
    locs = torch.tensor([-1.0, 1.0])

    def model(x):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    def guide(x):
        pyro.sample("weights", dist.Dirichlet(_scale("q_conc", 1.5, (2,))))
        with pyro.plate("data", len(x)):
            logits = torch.stack([-x, x], -1) * _loc("q_sharp", 1.0)
            pyro.sample("c", dist.Categorical(logits=logits))
    return model, guide


@case("global_matrix_param_shared_sites", args=(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)),))
def _():
    def model(x):
        scale = _scale("m_scale", 1.0)  # one parameter at two sites
        W = pyro.sample("W", dist.Normal(torch.zeros(3), scale).to_event(1))
        with pyro.plate("rows", x.shape[0]):
            h = pyro.sample("h", dist.Normal(0.0, scale))
            pyro.sample("x", dist.Normal(h.unsqueeze(-1) * W, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("W", dist.Normal(_loc("q_W", 0.1, (3,)), _scale("q_Ws", 0.5, (3,))).to_event(1))
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("h", dist.Normal(x.mean(-1) * _loc("q_h", 0.5), _scale("q_hs", 0.7)))
    return model, guide


# ------------------------------------------------------------------ plates


@case("plate_named_obs", args=(X6,), convention=False)
def _():
    def model(x):
        with pyro.plate("observations", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("observations", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x * _loc("q_a", 1.0), _scale("q_s", 0.7)))
    return model, guide


@case("plate_named_particles", args=(X4,))
def _():
    def model(x):  # a user plate called "particles"
        with pyro.plate("particles", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("particles", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x + _loc("q_c", 0.1), _scale("q_s", 0.7)))
    return model, guide


@case("convention_vae_like", args=(torch.randn(5, 3, generator=torch.Generator().manual_seed(1)),),
      convention=True)
def _():
    def model(x):
        W = _loc("m_W", 0.3, (2, 3))
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W, 1.0).to_event(1), obs=x)

    def guide(x):
        A = _loc("q_A", 0.1, (3, 2))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x @ A, _scale("q_s", 0.8, (2,))).to_event(1))
    return model, guide


@case("nested_data_features", args=(torch.randn(4, 3, generator=torch.Generator().manual_seed(2)),))
def _():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))  # (4, 1)
            with pyro.plate("features", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            loc = x.mean(-1, keepdim=True) * _loc("q_a", 0.8)
            pyro.sample("z", dist.Normal(loc, _scale("q_s", 0.6)))
    return model, guide


@case("nested_latent_inner_plate", args=(torch.randn(3, 2, generator=torch.Generator().manual_seed(3)),))
def _():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            with pyro.plate("cells", x.shape[1], dim=-1):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            with pyro.plate("cells", x.shape[1], dim=-1):
                pyro.sample("z", dist.Normal(0.8 * x, _scale("q_s", 0.4)))
    return model, guide


@case("plate_stack", args=(torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(4)),))
def _():
    def model(x):
        with pyro.plate_stack("grid", x.shape):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate_stack("grid", x.shape):
            pyro.sample("z", dist.Normal(0.5 * x, _scale("q_s", 0.7)))
    return model, guide


@case("nonnested_plates", args=(X4, X6))
def _():
    def model(a, b):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("a_plate", len(a)):
            pyro.sample("a", dist.Normal(mu, 1.0), obs=a)
        with pyro.plate("b_plate", len(b)):
            pyro.sample("b", dist.Normal(-mu, 1.0), obs=b)

    def guide(a, b):
        pyro.sample("mu", dist.Normal(_loc("q_mu"), _scale("q_s", 0.5)))
    return model, guide


@case("plate_reuse_two_dims", args=(torch.randn(3, 4, generator=torch.Generator().manual_seed(5)),))
def _():
    def model(x):
        rows = pyro.plate("rows", x.shape[0], dim=-2)
        cols = pyro.plate("cols", x.shape[1], dim=-1)
        with rows:
            r = pyro.sample("r", dist.Normal(0.0, 1.0))
        with cols:
            c = pyro.sample("c", dist.Normal(0.0, 1.0))
        with rows, cols:
            pyro.sample("x", dist.Normal(r + c, 1.0), obs=x)

    def guide(x):
        rows = pyro.plate("rows", x.shape[0], dim=-2)
        cols = pyro.plate("cols", x.shape[1], dim=-1)
        with rows:
            pyro.sample("r", dist.Normal(0.3 * x.mean(-1, keepdim=True), _scale("q_rs", 0.7)))
        with cols:
            pyro.sample("c", dist.Normal(0.3 * x.mean(0), _scale("q_cs", 0.7)))
    return model, guide


@case("sequential_plate", args=(X4,))
def _():
    def model(x):
        for i in pyro.plate("data", len(x)):
            z = pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0))
            pyro.sample(f"x_{i}", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"z_{i}", dist.Normal(0.5 * x[i], _scale("q_s", 0.7)))
    return model, guide


@case("sequential_inside_vectorized", args=(torch.randn(4, 2, generator=torch.Generator().manual_seed(6)),))
def _():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            for j in pyro.plate("steps", x.shape[1]):
                z = pyro.sample(f"z_{j}", dist.Normal(0.0, 1.0))
                pyro.sample(f"x_{j}", dist.Normal(z, 1.0), obs=x[:, j])

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            for j in pyro.plate("steps", x.shape[1]):
                pyro.sample(f"z_{j}", dist.Normal(0.5 * x[:, j], _scale("q_s", 0.7)))
    return model, guide


# ------------------------------------------------------------------ subsampling and scale


@case("subsampled_data_plate", args=(X6,))
def _():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])

    def guide(x):
        pyro.sample("mu", dist.Normal(_loc("q_mu"), _scale("q_s", 0.5)))
    return model, guide


@case("subsampled_local_latents", args=(X6,))
def _():
    def model(x):
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            pyro.sample("z", dist.Normal(0.5 * x[idx], _scale("q_s", 0.7)))
    return model, guide


@case("subsampled_nested_in_data", args=(torch.randn(3, 6, generator=torch.Generator().manual_seed(7)),))
def _():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("pixels", x.shape[1], subsample_size=2, dim=-1) as idx:
                pyro.sample("x", dist.Normal(z, 1.0), obs=x[:, idx])

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(0.4 * x.mean(-1, keepdim=True), _scale("q_s", 0.7)))
    return model, guide


@case("subsampled_discrete_local", args=(X6,), reparam=False)
def _():
    def model(x):
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x[idx])

    def guide(x):
        with pyro.plate("data", len(x), subsample_size=3) as idx:
            pyro.sample("z", dist.Bernoulli(logits=x[idx] * _loc("q_a", 1.0)))
    return model, guide


@case("subsample_param_in_guide", args=(X6,))
def _():
    def model(x):
        with pyro.plate("data", len(x), subsample_size=4) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        with pyro.plate("data", len(x), subsample_size=4):
            loc = pyro.param("q_locs", torch.zeros(len(x)), event_dim=0)
            pyro.sample("z", dist.Normal(loc, _scale("q_s", 0.7)))
    return model, guide


@case("poutine_scale_model", args=(X4,))
def _():
    def model(x):
        with poutine.scale(scale=2.0):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            with pyro.plate("data", len(x)):
                pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        with poutine.scale(scale=2.0):
            pyro.sample("mu", dist.Normal(_loc("q_mu"), _scale("q_s", 0.5)))
    return model, guide


@case("poutine_scale_kl_anneal", args=(X6,))
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            with poutine.scale(scale=0.5):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            with poutine.scale(scale=0.5):
                pyro.sample("z", dist.Normal(0.5 * x, _scale("q_s", 0.7)))
    return model, guide


@case("poutine_scale_discrete", args=(torch.tensor([0.9, -1.1, 0.4]),), discrete=True, reparam=False)
def _():
    def model(x):
        with poutine.scale(scale=2.0), pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x):
        with poutine.scale(scale=2.0), pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=x * _loc("q_a", 0.5)))
    return model, guide


# ------------------------------------------------------------------ masks


@case("poutine_mask_tensor", args=(X6, torch.tensor([True, True, False, True, False, True])))
def _():
    def model(x, m):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with poutine.mask(mask=m):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x, m):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x * m, _scale("q_s", 0.7)))
    return model, guide


@case("obs_mask_imputation", args=(X4, torch.tensor([True, False, True, False])))
def _():
    def model(x, m):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x, obs_mask=m)

    def guide(x, m):
        mu = pyro.sample("mu", dist.Normal(_loc("q_mu"), _scale("q_s", 0.5)))
        with pyro.plate("data", len(x)):
            with poutine.mask(mask=~m):
                pyro.sample("x_unobserved", dist.Normal(mu, 1.0))
    return model, guide


@case("mask_false_site", args=(X4,))
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with poutine.mask(mask=False):
                pyro.sample("ignored", dist.Normal(z, 1.0), obs=x + 1.0)
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x, _scale("q_s", 0.7)))
    return model, guide


@case("masked_discrete_latent", args=(X4, torch.tensor([True, False, True, True])), reparam=False)
def _():
    def model(x, m):
        with pyro.plate("data", len(x)):
            with poutine.mask(mask=m):
                z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x, m):
        with pyro.plate("data", len(x)):
            with poutine.mask(mask=m):
                pyro.sample("z", dist.Bernoulli(logits=x * _loc("q_a", 0.5)))
    return model, guide


# ------------------------------------------------------------------ factors and guide sites


@case("factor_in_model", args=(X4,), factor=True)
def _():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.factor("soft_constraint", -((mu - 0.5) ** 2))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(_loc("q_mu"), _scale("q_s", 0.5)))
    return model, guide


@case("factor_in_data_plate", args=(X6,), factor=True)
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.factor("lik", dist.Normal(z, 1.0).log_prob(x))

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x, _scale("q_s", 0.7)))
    return model, guide


@case("guide_factor_reparam", args=(X4,), guide_only=True)
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        a = _loc("q_a", 0.5)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(a * x, _scale("q_s", 0.7)))
            pyro.factor("guide_penalty", -0.1 * (z - a) ** 2, has_rsample=True)
    return model, guide


@case("guide_factor_global", args=(X4,), guide_only=True)
def _():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        loc = _loc("q_mu", 0.2)
        pyro.sample("mu", dist.Normal(loc, _scale("q_s", 0.5)))
        pyro.factor("entropy_bonus", 0.3 * loc, has_rsample=True)
    return model, guide


@case("guide_observed_site", args=(X4,), guide_only=True)
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        a = _loc("q_a", 0.5)
        pyro.sample("anchor", dist.Normal(a, 1.0), obs=torch.tensor(0.3),
                    infer={"is_auxiliary": True})
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(a * x, _scale("q_s", 0.7)))
    return model, guide


@case("guide_factor_discrete", args=(torch.tensor([0.9, 1.1]),), discrete=True, reparam=False,
      guide_only=True)
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)

    def guide(x):
        a = _loc("q_a", 0.5)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(logits=a * x))
            pyro.factor("guide_term", 2.0 * a * z, has_rsample=True)
    return model, guide


@case("param_shared_model_guide", args=(X4,))
def _():
    def model(x):
        s = _scale("shared_scale", 0.8)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, s), obs=x)

    def guide(x):
        s = _scale("shared_scale", 0.8)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x, s))
    return model, guide


# ------------------------------------------------------------------ discrete and mixed


@case("categorical_local", args=(X6,), discrete=False, reparam=False)
def _():
    locs = torch.tensor([-2.0, 0.0, 2.0])

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            logits = -((x.unsqueeze(-1) - locs) ** 2) * _loc("q_t", 0.5)
            pyro.sample("c", dist.Categorical(logits=logits))
    return model, guide


@case("sbn_two_layers", args=(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),), discrete=True,
      reparam=False)
def _():
    def model(x):
        W = _loc("m_W", 0.5, (2, 3))
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample("h", dist.Bernoulli(torch.full((2,), 0.5)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=h @ W - 0.5).to_event(1), obs=x)

    def guide(x):
        A = _loc("q_A", 0.2, (3, 2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Bernoulli(logits=x @ A).to_event(1))
    return model, guide


@case("mixed_discrete_continuous", args=(X4,), reparam=False)
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            s = pyro.sample("s", dist.Bernoulli(0.5))
            z = pyro.sample("z", dist.Normal(2.0 * s - 1.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            s = pyro.sample("s", dist.Bernoulli(logits=x * _loc("q_a", 1.0)))
            pyro.sample("z", dist.Normal(0.5 * x + 0.5 * (2.0 * s - 1.0), _scale("q_s", 0.6)))
    return model, guide


@case("not_has_rsample_normal", args=(torch.tensor(0.0),), reparam=False)
def _():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        p = z.round().clamp(min=0.2, max=0.8)  # discontinuous in z
        pyro.sample("x", dist.Bernoulli(p), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(_loc("q_loc"), 1.0).has_rsample_(False))
    return model, guide


# ------------------------------------------------------------------ arguments


@case("data_by_keyword", kwargs={"x": X6})
def _():
    def model(x=None):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x=None):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x, _scale("q_s", 0.7)))
    return model, guide


@case("data_closed_over", no_obs_arg=True)
def _():
    data = X6.clone()

    def model():
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data)

    def guide():
        with pyro.plate("data", len(data)):
            pyro.sample("z", dist.Normal(0.5 * data, _scale("q_s", 0.7)))
    return model, guide


@case("two_observed_sites", args=(X4, 2.0 * X4))
def _():
    def model(a, b):
        with pyro.plate("data", len(a)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("a", dist.Normal(z, 1.0), obs=a)
            pyro.sample("b", dist.Normal(2.0 * z, 1.0), obs=b)

    def guide(a, b):
        with pyro.plate("data", len(a)):
            pyro.sample("z", dist.Normal(0.25 * (a + b), _scale("q_s", 0.6)))
    return model, guide


# ------------------------------------------------------------------ code that cannot be vectorized


@case("dynamic_control_flow", args=(torch.tensor(0.5),), dynamic=True)
def _():
    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        if z > 0:  # a Python branch on a sample
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        else:
            pyro.sample("x", dist.Normal(-z, 2.0), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(_loc("q_loc", 0.3), _scale("q_s", 0.8)))
    return model, guide


@case("shape_assertions", args=(X4,), dynamic=True)
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            assert z.shape == (len(x),)
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.5 * x, _scale("q_s", 0.7)))
            assert z.shape == (len(x),)
    return model, guide


@case("variable_number_of_sites", args=(torch.tensor(1.0),), dynamic=True, reparam=False)
def _():
    def model(x):
        n = pyro.sample("n", dist.Bernoulli(0.5))
        total = torch.tensor(0.0)
        for i in range(1 + int(n)):
            total = total + pyro.sample(f"z_{i}", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(total, 1.0), obs=x)

    def guide(x):
        n = pyro.sample("n", dist.Bernoulli(_prob("q_n", 0.5)))
        for i in range(1 + int(n)):
            pyro.sample(f"z_{i}", dist.Normal(_loc(f"q_z{i}", 0.2), 1.0))
    return model, guide


def by_name(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)
