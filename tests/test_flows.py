"""Normalizing-flow guides: log-determinants, inverses, normalization, the path
derivative for STL/DReG, convergence to an exact posterior, the VAE option,
and bad input. Everything in float64, with fixed seeds."""

from __future__ import annotations

import copy
import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro import poutine
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from torch.utils.data import TensorDataset

from linear_gaussian import LinearGaussian
from pyro_deepgen.evaluate import active_units
from pyro_deepgen.guides import FLOWS, ConditionalSylvester, Flow, FlowGuide, flow_transforms
from pyro_deepgen.guides.flows import init_identity_
from pyro_deepgen.infer import IWAE, STL
from pyro_deepgen.infer.path import path_log_prob
from pyro_deepgen.models import VAE, load_model, save_model

D64 = torch.float64
INVERTIBLE = ("iaf", "coupling", "householder")  # analytic inverses; the others invert via the cache
CONTEXT = 3


def _transforms(flow: str, dim: int, conditional: bool, num_flows: int = 1, seed: int = 0):
    """Transforms with O(1) random parameters (Pyro initializes some near zero)."""
    torch.manual_seed(seed)
    ts = flow_transforms(flow, dim, num_flows, CONTEXT if conditional else None).to(D64)
    with torch.no_grad():
        for p in ts.parameters():
            p.normal_(0, 0.4)
    return ts


def _condition(ts, context):
    return [t.condition(context) if isinstance(t, ConditionalTransformModule) else t for t in ts]


def _compose(transforms):
    def f(x):
        for t in transforms:
            x = t(x)
        return x
    return f


def _log_det(transforms, x):
    total = torch.zeros(x.shape[:-1], dtype=x.dtype)
    for t in transforms:
        y = t(x)
        total = total + t.log_abs_det_jacobian(x, y)
        x = y
    return total


@pytest.fixture
def float64_default():
    """Pyro 1.9's AffineAutoregressive inverse builds float32 zeros whatever the
    input's dtype; a float64 default dtype lets the float64 tests invert it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(D64)
    yield
    torch.set_default_dtype(old)


CASES = [(f, c) for f in FLOWS for c in (False, True)]
IDS = [f"{f}-{'cond' if c else 'plain'}" for f, c in CASES]


@pytest.mark.parametrize("flow,conditional", CASES, ids=IDS)
def test_log_det_matches_autograd_jacobian(flow, conditional):
    ts = _transforms(flow, 3, conditional, num_flows=2)  # coupling: layer, reversal, layer
    x = torch.randn(5, 3, dtype=D64)
    contexts = torch.randn(5, CONTEXT, dtype=D64)
    for i in range(5):
        trs = _condition(ts, contexts[i])
        jac = torch.autograd.functional.jacobian(_compose(trs), x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        assert torch.allclose(_log_det(trs, x[i]), expected, atol=1e-10), (flow, i)
    # batched, and broadcast over an outer particle dim (k, batch, dim) against (batch, context)
    xk = x.expand(4, 5, 3) + 0.1 * torch.randn(4, 5, 3, dtype=D64)
    batched = _log_det(_condition(ts, contexts), xk)
    for i in range(5):
        trs = _condition(ts, contexts[i])
        assert torch.allclose(batched[:, i], _log_det(trs, xk[:, i]), atol=1e-10)


@pytest.mark.parametrize("flow,conditional", [(f, c) for f in INVERTIBLE for c in (False, True)])
def test_inverse(flow, conditional, float64_default):
    ts = _condition(_transforms(flow, 4, conditional, num_flows=3), torch.randn(6, CONTEXT, dtype=D64))
    x = torch.randn(2, 6, 4, dtype=D64)
    y = _compose(ts)(x)
    back = y.clone()  # a new tensor: no cache hit, the analytic inverse
    for t in reversed(ts):
        back = t.inv(back)
    assert torch.allclose(back, x, atol=1e-9)


def _newton_inverse(transform, y, steps=60):
    """Solves transform(x) = y, one point per row, by damped Newton from x = y."""
    x = y.clone()
    for _ in range(steps):
        x = x.detach().requires_grad_()
        r = transform(x) - y
        if r.abs().max() < 1e-11:
            break
        jac = torch.stack([torch.autograd.grad(r[:, i].sum(), x, retain_graph=i == 0)[0]
                           for i in range(2)], -2)
        x = x - torch.linalg.solve(jac, r.detach().unsqueeze(-1)).squeeze(-1).clamp(-1, 1)
    x = x.detach()
    assert (transform(x) - y).abs().max() < 1e-9, "Newton did not converge"
    return x


@pytest.mark.parametrize("flow,conditional", CASES, ids=IDS)
def test_density_integrates_to_one(flow, conditional, float64_default):
    """q(z) = N(T^-1 z) / |det J| on a grid; flows without an analytic inverse are
    inverted numerically, one layer at a time. The midpoint rule on 0.05-wide cells
    has an error of order h^2 |q''| ~ 1e-5 here; the square [-12, 12]^2 holds all but
    about 1e-8 of the mass (the coupling layers stretch by up to e^2): tolerance 1e-3."""
    ts = _condition(_transforms(flow, 2, conditional, num_flows=2, seed=1),
                    torch.randn(CONTEXT, dtype=D64))
    h = 0.05
    c = torch.arange(-12 + h / 2, 12, h, dtype=D64)
    z = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    x, log_q = z, torch.zeros(len(z), dtype=D64)
    for t in reversed(ts):
        analytic = flow in INVERTIBLE or isinstance(t, T.Permute)
        prev = t.inv(x.clone()) if analytic else _newton_inverse(t, x)
        log_q = log_q - t.log_abs_det_jacobian(prev, t(prev))
        x = prev
    log_q = log_q + dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1).log_prob(x)
    mass = (log_q.exp().sum() * h * h).item()
    assert abs(mass - 1) < 1e-3, mass


# ---------------------------------------------------------------- the path derivative


def _frozen_log_q(frozen: FlowGuide, x: torch.Tensor, z: torch.Tensor, eps0: torch.Tensor):
    """log q(z) under ``frozen`` (a copy of the guide without gradients), as a function
    of z only: the base point solved by Newton on the whole flow, differentiated implicitly."""
    loc, scale, context = frozen.encode(x)
    trs = _condition(frozen.transforms, context)
    fwd = _compose(trs)
    n = z.shape[-1]

    def jac(e):
        e = e.detach().requires_grad_()
        out = fwd(e)
        return torch.stack([torch.autograd.grad(out[..., i].sum(), e, retain_graph=True)[0]
                            for i in range(n)], -2)

    e = eps0.detach().clone()
    for _ in range(5):
        e = e - torch.linalg.solve(jac(e), (fwd(e) - z.detach()).unsqueeze(-1)).squeeze(-1)
    e = e + torch.linalg.solve(jac(e), (z - z.detach()).unsqueeze(-1)).squeeze(-1)
    log_q = dist.Normal(loc, scale).to_event(1).log_prob(e)
    return log_q - _log_det(trs, e)


@pytest.mark.parametrize("flow", FLOWS)
def test_path_log_prob_is_the_path_derivative(flow):
    torch.manual_seed(0)
    guide = FlowGuide(4, 3, flow=flow, num_flows=2, hidden=(8,)).double()
    frozen = copy.deepcopy(guide).requires_grad_(False)
    x = torch.randn(5, 4, dtype=D64)
    params = list(guide.parameters())
    with pyro.plate("particles", 2, dim=-2):
        site = poutine.trace(guide.guide).get_trace(x).nodes["z"]
    fn, z = site["fn"], site["value"]
    lp = path_log_prob(fn, z)
    assert torch.equal(lp, fn.log_prob(z).detach()) or torch.allclose(lp, fn.log_prob(z), atol=1e-12)
    got = torch.autograd.grad(lp.sum(), params, allow_unused=True, retain_graph=True)
    eps = z
    for t in reversed(fn.transforms):
        eps = t.inv(eps)
    expected = torch.autograd.grad(_frozen_log_q(frozen, x, z, eps).sum(), params, allow_unused=True,
                                   retain_graph=True)
    for g, e in zip(got, expected):
        g = torch.zeros(()) if g is None else g
        e = torch.zeros(()) if e is None else e
        assert torch.allclose(g, e, atol=1e-9)
    assert any(g is not None and g.abs().max() > 1e-3 for g in got)
    # the full gradient (score term included) is different
    full = torch.autograd.grad(fn.log_prob(z).sum(), params, allow_unused=True)
    assert any(f is not None and g is not None and not torch.allclose(f, g) for f, g in zip(full, got))


class LinearEncoder(nn.Module):
    """``loc = A x + c``, ``scale = exp(log_s)``, context ``x``: can be exact for the linear Gaussian."""

    def __init__(self, lg: LinearGaussian):
        super().__init__()
        A, c, s = lg.exact_posterior_params()
        self.A, self.c, self.log_s = nn.Parameter(A.clone()), nn.Parameter(c.clone()), nn.Parameter(s.log())

    def forward(self, x):
        return x @ self.A.T + self.c, self.log_s.exp().expand(x.shape[0], -1), x


def _identity_flow(guide: FlowGuide) -> FlowGuide:
    """Sets each transform's network so that the transform is the identity."""
    with torch.no_grad():
        for t in guide.transforms:
            for m in t.modules():
                if isinstance(m, nn.Linear):
                    m.weight.zero_()
                    m.bias.zero_()
            if isinstance(t, ConditionalSylvester):  # R = S = 0; unit reflection vectors
                t.nn.net[-1].bias[: t.count_transforms * t.input_dim] = 1.0
            if guide.flow == "radial":  # beta = softplus(beta') - softplus(alpha') = 0
                t.nn.net[-1].bias[-2:] = 0.5
    return guide


@pytest.mark.parametrize("flow", ["radial", "sylvester", "iaf", "coupling"])
def test_stl_with_a_flow_has_zero_variance_at_the_exact_posterior(flow):
    lg = LinearGaussian(x_dim=3, z_dim=2)
    # three layers: the coupling flow's two reversals cancel
    guide = _identity_flow(FlowGuide(LinearEncoder(lg), 2, flow=flow, num_flows=3, context_dim=3,
                                     name="lg_enc").double())
    x = lg.sample_x(4)
    params = [p for p in guide.parameters() if p.requires_grad]
    for loss in (STL(num_particles=2), IWAE(num_particles=3, gradient="dreg")):
        for _ in range(3):
            pyro.clear_param_store()
            for p in params:
                p.grad = None
            loss.loss_and_grads(poutine.block(lg.model, hide_types=["param"]), guide.guide, x)
            worst = max(p.grad.abs().max().item() for p in params if p.grad is not None)
            assert worst < 1e-10, (type(loss).__name__, worst)
    # whereas Pyro's Trace_ELBO keeps the score term: non-zero at the optimum, per draw
    pyro.clear_param_store()
    Trace_ELBO().loss_and_grads(lg.model, guide.guide, x)
    assert guide.encoder.log_s.grad.abs().max() > 1e-3


def _kl_to_posterior(guide: FlowGuide, lg: LinearGaussian, x: torch.Tensor, n: int = 2000):
    A, c, s = lg.exact_posterior_params()
    with torch.no_grad():
        q = guide.distribution(x)
        z = q.sample((n,))
        d = q.log_prob(z) - dist.Normal(x @ A.T + c, s).to_event(1).log_prob(z)
    return d.mean().item(), d.std().item() / math.sqrt(d.numel())


@pytest.mark.parametrize("flow", FLOWS)
def test_flow_guide_converges_to_the_exact_posterior(flow):
    """From a random start (KL about 2-3 nats) to KL(q || p(z|x)) < 0.02 nats,
    averaged over 64 datapoints, in 300 steps of decaying Adam."""
    torch.manual_seed(0)
    lg = LinearGaussian(x_dim=3, z_dim=2)
    x = lg.sample_x(64)
    guide = FlowGuide(3, 2, flow=flow, num_flows=2, hidden=(16,)).double()
    before, _ = _kl_to_posterior(guide, lg, x, n=200)
    optim = pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.05 ** (1 / 300)})
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(poutine.block(lg.model, hide_types=["param"]), guide.guide, optim, elbo)
    for _ in range(300):
        svi.step(x)
    kl, se = _kl_to_posterior(guide, lg, x)
    assert before > 0.3
    assert kl < 0.02 + 4 * se, (kl, se)


# ---------------------------------------------------------------- the VAE option


def _binary(n=16, d=20):
    return torch.bernoulli(torch.full((n, d), 0.4))


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("loss", ["elbo", "iwae", "dreg", "stl"])
def test_vae_with_a_flow_trains_with_every_reparameterized_objective(flow, loss):
    objective = {
        "elbo": lambda: Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1),
        "iwae": lambda: IWAE(num_particles=3),
        "dreg": lambda: IWAE(num_particles=3, gradient="dreg"),
        "stl": lambda: STL(num_particles=2),
    }[loss]()
    vae = VAE(20, z_dim=3, hidden=(16,), flow=flow, num_flows=2)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), objective)
    losses = [svi.step(_binary()) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    store = pyro.get_param_store()
    assert any(n.startswith("vae.encoder$$$transforms") for n in store.keys())
    assert not any("transforms" in n for n in store.keys() if n.startswith("vae.decoder"))


def test_vae_without_a_flow_keeps_its_state_dict_keys():
    keys = sorted(VAE(20, z_dim=3, hidden=(16,)).state_dict())
    assert keys == ["decoder.0.bias", "decoder.0.weight", "decoder.2.bias", "decoder.2.weight",
                    "encoder.loc.bias", "encoder.loc.weight", "encoder.scale.bias",
                    "encoder.scale.weight", "encoder.trunk.0.0.bias", "encoder.trunk.0.0.weight"]


@pytest.mark.parametrize("flow", ["planar", "iaf", "coupling"])
def test_vae_with_a_flow_saves_loads_and_evaluates(flow, tmp_path):
    config = {"x_dim": 20, "z_dim": 3, "hidden": [16], "flow": flow, "num_flows": 2}
    vae = VAE(**config)
    save_model(vae, "vae", config, tmp_path)
    loaded = load_model(tmp_path)
    x = _binary()
    draws = []
    for module in (vae, loaded):
        torch.manual_seed(1)
        q = module.guide_dist(x)
        z = q.sample()
        draws.append((z, q.log_prob(z)))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert loaded.reconstruct(x).shape == x.shape and loaded.sample(4).shape == (4, 20)
    au = active_units(loaded.guide, TensorDataset(x), num_samples=20)  # q has no .mean: sampled
    assert au.variance.shape == (3,) and torch.isfinite(au.variance).all()


# ---------------------------------------------------------------- unconditional flows


@pytest.mark.parametrize("flow", FLOWS)
def test_unconditional_flow_guide(flow):
    q = Flow(2, flow, num_flows=2)
    with pyro.plate("particles", 5, dim=-1):
        tr = poutine.trace(q.guide).get_trace()
    site = tr.nodes["z"]
    assert site["value"].shape == (5, 2) and site["fn"].log_prob(site["value"]).shape == (5,)
    assert any(n.startswith("flow$$$") for n in pyro.get_param_store().keys())


@pytest.mark.parametrize("flow", FLOWS)
def test_identity_init_starts_at_the_base_distribution(flow):
    """A fresh 32-layer Flow is its base N(0, I): each transform is the identity, except
    the coupling flow's reversals and the Householder reflections, which are orthogonal
    (so q is N(0, I) all the same)."""
    torch.manual_seed(0)
    q = Flow(2, flow, num_flows=32)
    x = torch.randn(500, 2)
    y, ref, log_det = x, x, torch.zeros(500)
    for t in q.transforms:
        z = t(y)
        log_det, y = log_det + t.log_abs_det_jacobian(y, z), z
        ref = t(ref) if isinstance(t, T.Permute) else ref
    assert log_det.abs().max() < 1e-5
    if flow != "householder":
        assert torch.allclose(y, ref, atol=1e-5)
    z = q.distribution().sample((500,))
    expected = dist.Normal(torch.zeros(2), 1.0).to_event(1).log_prob(z)
    assert torch.allclose(q.distribution().log_prob(z), expected, atol=1e-4)


def test_pyro_init_of_a_deep_planar_flow_is_a_near_point_mass():
    """Why Flow starts at the identity: 32 planar layers with Pyro's initialisation map
    N(0, I) to a distribution with covariance eigenvalues below 1e-3."""
    torch.manual_seed(0)
    for init, (lo, hi) in (("pyro", (0.0, 1e-3)), ("identity", (0.9, 1.1))):
        with torch.no_grad():
            z = Flow(2, "planar", num_flows=32, init=init).distribution().sample((20_000,))
        eig = torch.linalg.eigvalsh(torch.cov(z.T))
        assert lo <= eig.min() and eig.max() <= hi, (init, eig)


@pytest.mark.parametrize("flow", ["planar", "radial", "sylvester", "iaf", "coupling"])
def test_identity_init_keeps_every_layer_trainable(flow):
    """The identity is not a dead point: every transform's parameters get a gradient."""
    torch.manual_seed(0)
    q = Flow(2, flow, num_flows=4)
    z = q.distribution().rsample((64,))
    ((z - torch.tensor([1.0, -2.0])).pow(2).sum() + z[:, 0].pow(3).sum()).backward()
    for t in q.transforms:
        if isinstance(t, T.Permute):
            continue
        grads = [p.grad.abs().max().item() for p in t.parameters() if p.grad is not None]
        assert max(grads) > 1e-3, (flow, type(t).__name__)


def test_init_identity_arguments():
    planar = T.Planar(3)
    w = planar.w.detach().clone()
    assert init_identity_(planar) is planar and torch.equal(planar.w, w)  # w is kept
    with pytest.raises(ValueError, match="unknown init 'zeros'; valid: pyro, identity"):
        flow_transforms("planar", 2, 2, init="zeros")
    with pytest.raises(ValueError, match="init='identity' is for unconditional transforms"):
        flow_transforms("planar", 2, 2, context_dim=3, init="identity")
    with pytest.raises(ValueError, match="init_identity_ is for unconditional transforms"):
        init_identity_(flow_transforms("iaf", 2, 1, context_dim=3)[0])


# ---------------------------------------------------------------- bad input


def test_unknown_flow_lists_the_valid_ones():
    for make in (lambda: FlowGuide(4, 2, flow="maf"), lambda: flow_transforms("maf", 2, 1),
                 lambda: VAE(4, 2, hidden=(8,), flow="maf"), lambda: Flow(2, "maf")):
        with pytest.raises(ValueError, match="unknown flow 'maf'; valid: planar, radial, sylvester, "
                                             "iaf, coupling, householder"):
            make()


class BadContextEncoder(nn.Module):
    def __init__(self, context_size):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.context_size = context_size

    def forward(self, x):
        return self.lin(x), torch.ones(x.shape[0], 2), torch.zeros(x.shape[0], self.context_size)


def test_context_size_mismatch_names_both_sizes():
    guide = FlowGuide(BadContextEncoder(5), 2, flow="iaf", context_dim=7)
    with pytest.raises(ValueError, match="context has size 5, but the flow expects context_dim=7"):
        guide.distribution(torch.randn(3, 4))
    sylvester = ConditionalSylvester(2, context_dim=7)
    with pytest.raises(ValueError, match="context has size 5, but context_dim=7"):
        sylvester.condition(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="needs context_dim"):
        FlowGuide(BadContextEncoder(5), 2)


@pytest.mark.parametrize("flow", ["planar", "sylvester", "iaf"])
def test_nan_in_the_context_is_caught_at_the_first_step(flow):
    vae = VAE(20, z_dim=3, hidden=(16,), likelihood="gaussian", flow=flow, num_flows=2)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    x = torch.rand(8, 20)
    x[3, 5] = float("nan")
    message = r"context h\(x\) has a NaN or infinite value \(first at datapoint 3\)"
    with pytest.raises(ValueError, match=message):
        svi.step(x)
    guide = FlowGuide(4, 2, flow=flow, hidden=(8,))
    with torch.no_grad():
        guide.encoder.trunk[0][0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        guide.distribution(torch.randn(2, 4))


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="num_flows must be >= 1; got 0"):
        FlowGuide(4, 2, num_flows=0)
    with pytest.raises(ValueError, match="the 'coupling' flow needs dim >= 2; got dim=1"):
        flow_transforms("coupling", 1, 2)
    with pytest.raises(ValueError, match="the encoder outputs 3 dims but z_dim=2"):
        from pyro_deepgen.nn import NormalEncoder
        FlowGuide(NormalEncoder(4, (8,), 3), 2)


def test_path_log_prob_loop_fallback_and_foreign_values(monkeypatch):
    torch.manual_seed(0)
    guide = FlowGuide(4, 3, flow="planar", num_flows=2, hidden=(8,)).double()
    x = torch.randn(5, 4, dtype=D64)
    with pyro.plate("particles", 2, dim=-2):
        site = poutine.trace(guide.guide).get_trace(x).nodes["z"]
    fn, z = site["fn"], site["value"]
    params = list(guide.parameters())
    vectorized = torch.autograd.grad(path_log_prob(fn, z).sum(), params, retain_graph=True)
    grad = torch.autograd.grad

    def no_batching(*args, **kwargs):  # as if an operation had no vmap rule
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    looped = grad(path_log_prob(fn, z).sum(), params, retain_graph=True)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(vectorized, looped))
    # the caches are left as the guide left them: the sample can still be scored
    assert torch.allclose(fn.log_prob(z), path_log_prob(fn, z))
    with pytest.raises(ValueError, match="cannot recover the base sample of a flow without an "
                                         "analytic inverse"):
        path_log_prob(fn, z.clone())
