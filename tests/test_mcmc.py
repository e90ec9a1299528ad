"""The one HMC package: the batched transition against a known target, step-size
adaptation, the argument and latent-site checks, the traced log joint, and that
MCEM, the MCMC-refined ELBO, HVI and AIS all go through it."""

import ast
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_deepgen.evaluate import ais_log_likelihood
from pyro_deepgen.infer import MCEM, log_joint
from pyro_deepgen.mcmc import (adapt_step_size, check_continuous_site, check_counts,
                               check_hmc_options, check_step_size, continuous_latent_sites, hmc,
                               hmc_transition, mcmc_posterior)
from test_ais import _discrete_model

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_deepgen"

LOC = torch.tensor([1.0, -1.0], dtype=torch.float64)
SCALE = torch.tensor([0.5, 2.0], dtype=torch.float64)


def gaussian(z):
    """log N(z; LOC, diag(SCALE^2)) per chain, up to a constant."""
    return -0.5 * ((z - LOC) / SCALE).pow(2).sum(-1)


def standard_normal(z):
    return -0.5 * z.pow(2).sum(-1)


# ---------------------------------------------------------------- the transition

def test_hmc_transition_leaves_a_gaussian_invariant():
    """From exact draws, transitions whose leapfrog error is large (eps / sd = 1.6 in the
    narrow dimension) keep the draws exact only through a correct Metropolis correction."""
    pyro.set_rng_seed(0)
    n = 20000
    z = LOC + SCALE * torch.randn(n, 2, dtype=torch.float64)
    accept = []
    for _ in range(3):
        step = hmc_transition(z, gaussian, 0.8, num_leapfrog=5)
        z = step.z
        accept.append(step.accept_prob.mean().item())
        assert step.z.shape == (n, 2) and step.accept_prob.shape == step.accepted.shape == (n,)
    assert 0.2 < min(accept) and max(accept) < 0.95, accept  # rejections happen
    u = (z - LOC) / SCALE
    assert (u.mean(0).abs() < 4 / math.sqrt(n)).all(), u.mean(0)
    assert ((u.var(0) - 1).abs() < 4 * math.sqrt(2 / n)).all(), u.var(0)


def test_hmc_moves_chains_to_the_target_and_keeps_its_state_consistent():
    pyro.set_rng_seed(1)
    z0 = torch.randn(4000, 2, dtype=torch.float64) + 5.0
    z, eps, accept = hmc(z0, gaussian, 0.4, num_steps=40, num_leapfrog=5)
    assert eps.shape == (4000,) and bool((eps == 0.4).all())  # no target_accept: no adaptation
    assert accept.shape == (4000,) and 0.5 < accept.mean() < 1
    u = (z - LOC) / SCALE
    assert (u.mean(0).abs() < 0.1).all() and ((u.var(0) - 1).abs() < 0.1).all(), (u.mean(0), u.var(0))
    # the carried log density and gradient are those of the new state
    step = hmc_transition(z, gaussian, 0.4, 5)
    torch.testing.assert_close(step.log_prob, gaussian(step.z))
    torch.testing.assert_close(step.grad, -(step.z - LOC) / SCALE**2)


def test_the_start_may_be_passed_and_saves_an_evaluation():
    calls = []

    def counted(z):
        calls.append(z.shape)
        return gaussian(z)

    z = torch.randn(10, 2, dtype=torch.float64)
    pyro.set_rng_seed(2)
    a = hmc_transition(z, counted, 0.3, num_leapfrog=4)
    assert len(calls) == 5
    calls.clear()
    pyro.set_rng_seed(2)
    b = hmc_transition(z, counted, 0.3, num_leapfrog=4, start=(gaussian(z), -(z - LOC) / SCALE**2))
    assert len(calls) == 4
    torch.testing.assert_close(a.z, b.z)


def test_the_last_evaluation_is_at_the_proposal():
    """The contract AIS relies on: a recording log density holds the proposal's values."""
    class Recording:
        def __call__(self, z):
            self.z = z.detach()
            return gaussian(z)

    pyro.set_rng_seed(3)
    z = LOC + SCALE * torch.randn(500, 2, dtype=torch.float64)
    target = Recording()
    step = hmc_transition(z, target, 0.9, num_leapfrog=3)
    a = step.accepted
    assert a.any() and (~a).any()
    torch.testing.assert_close(target.z[a], step.z[a])
    assert not torch.equal(target.z[~a], step.z[~a])
    torch.testing.assert_close(step.z[~a], z[~a])


def test_diverging_trajectories_are_rejected_and_flagged():
    z0 = torch.randn(5, 2, dtype=torch.float64)
    step = hmc_transition(z0, standard_normal, 50.0, num_leapfrog=200)
    assert torch.equal(step.z, z0) and not step.accepted.any() and step.diverged.all()
    assert (step.accept_prob == 0).all()
    z, _, accept = hmc(z0, standard_normal, 50.0, num_steps=2, num_leapfrog=200)
    assert torch.equal(z, z0) and (accept == 0).all()
    ok = hmc_transition(z0, standard_normal, 0.1, num_leapfrog=3)
    assert not ok.diverged.any()


def test_an_error_that_pyro_catches_rejects_every_chain():
    """Pyro's integrator turns a singular-matrix error into a NaN energy and zero
    gradients; such a trajectory is not a valid proposal."""
    calls = [0]

    def fragile(z):
        calls[0] += 1
        if calls[0] == 6:  # the last step: Pyro 1.9 cannot go on after an error it caught
            raise RuntimeError("linalg.cholesky: The factorization could not be completed because "
                               "the input is not positive-definite")
        return standard_normal(z)

    z0 = torch.randn(6, 2, dtype=torch.float64)
    step = hmc_transition(z0, fragile, 0.1, num_leapfrog=5)
    assert calls[0] == 6  # the start, then every leapfrog step
    assert torch.equal(step.z, z0) and not step.accepted.any() and step.diverged.all()
    torch.testing.assert_close(step.log_prob, standard_normal(z0))


def test_hmc_needs_a_finite_start_and_valid_options():
    z = torch.zeros(3, 2)
    with pytest.raises(RuntimeError, match="not finite at the start of 3 chain"):
        hmc(z, lambda z: z.sum(-1) * math.nan, 0.1)
    with pytest.raises(ValueError, match="hmc needs an integer num_steps >= 1; got 0"):
        hmc(z, standard_normal, 0.1, num_steps=0)
    with pytest.raises(ValueError, match="hmc_transition needs an integer num_leapfrog >= 1"):
        hmc_transition(z, standard_normal, 0.1, num_leapfrog=0)
    with pytest.raises(ValueError, match="step_size must be positive and finite"):
        hmc(z, standard_normal, torch.tensor([0.1, 0.0, 0.1]))


# ---------------------------------------------------------------- adaptation

def test_adapt_step_size_is_a_robbins_monro_step_on_the_log_step_size():
    eps = torch.tensor([0.1, 0.2], dtype=torch.float64)
    got = adapt_step_size(eps, torch.tensor([0.9, 0.4], dtype=torch.float64), 0.65, rate=0.1)
    torch.testing.assert_close(got.log() - eps.log(), 0.1 * torch.tensor([0.25, -0.25],
                                                                         dtype=torch.float64))
    # chains that share a step size adapt it by their mean acceptance
    accept = torch.tensor([[1.0, 0.0], [0.5, 0.2], [0.0, 0.1]])  # 3 chains x 2 datapoints
    shared = adapt_step_size(torch.ones(2), accept, 0.5, rate=1.0)
    torch.testing.assert_close(shared, torch.exp(accept.mean(0) - 0.5))
    torch.testing.assert_close(adapt_step_size(torch.ones(1, 2), accept, 0.5, rate=1.0), shared[None])
    torch.testing.assert_close(adapt_step_size(torch.tensor(1.0), accept, 0.5, rate=1.0),
                               torch.exp(accept.mean() - 0.5))
    # clamped
    lo, hi = torch.tensor([1e-8], dtype=torch.float64), torch.tensor([900.0], dtype=torch.float64)
    assert adapt_step_size(lo, torch.zeros(1, dtype=torch.float64), 0.9, rate=10.0).item() == 1e-8
    assert adapt_step_size(hi, torch.ones(1, dtype=torch.float64), 0.1, rate=10.0).item() == 1e3


@pytest.mark.parametrize("start", [1e-3, 20.0])
def test_adaptation_moves_the_step_size_toward_the_target_acceptance(start):
    """From far too small a step (every proposal accepted) or far too large a one (none),
    adaptation brings each chain's acceptance to the target."""
    pyro.set_rng_seed(4)
    target = 0.65
    z = LOC + SCALE * torch.randn(400, 2, dtype=torch.float64)
    _, eps1, accept1 = hmc(z, gaussian, start, num_steps=1, num_leapfrog=5, target_accept=target)
    assert (eps1 > start).all() if start < 1 else (eps1 < start).all()
    assert abs(accept1.mean().item() - target) > 0.3
    z, eps, _ = hmc(z, gaussian, start, num_steps=400, num_leapfrog=5, target_accept=target,
                    adapt_rate=0.1)
    _, _, accept = hmc(z, gaussian, eps, num_steps=50, num_leapfrog=5)  # fixed adapted step sizes
    assert abs(accept.mean().item() - target) < 0.1, (accept.mean(), eps.median())


def test_chains_along_a_broadcast_dim_share_one_adapted_step_size():
    pyro.set_rng_seed(5)
    z = LOC + SCALE * torch.randn(8, 5, 2, dtype=torch.float64)  # 8 chains x 5 datapoints
    eps0 = torch.full((5,), 0.05, dtype=torch.float64)
    _, eps, accept = hmc(z, gaussian, eps0, num_steps=3, num_leapfrog=3, target_accept=0.65)
    assert eps.shape == (5,) and accept.shape == (8, 5)
    assert (eps > eps0).all()
    assert torch.equal(eps0, torch.full((5,), 0.05, dtype=torch.float64))  # not changed in place


# ---------------------------------------------------------------- checks

def test_count_step_size_and_option_checks():
    check_counts("HMC", num_steps=1, num_leapfrog=3)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=f"MCEM needs an integer num_steps >= 1; got {bad!r}"):
            check_counts("MCEM", num_steps=bad)
    check_step_size(torch.tensor([0.1, 2.0]))
    for bad in (0.0, -0.1, math.inf, math.nan, torch.tensor([0.1, 0.0])):
        with pytest.raises(ValueError, match="step_size must be positive and finite"):
            check_step_size(bad)
    check_hmc_options("X", 1, 1, 0.1, 0.5)
    for target in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"target_accept must be in \(0, 1\)"):
            check_hmc_options("X", 1, 1, 0.1, target)
    with pytest.raises(ValueError, match="X needs an integer num_leapfrog >= 1"):
        check_hmc_options("X", 1, 0, 0.1, 0.5)


def _site(fn, name="s"):
    return poutine.trace(lambda: pyro.sample(name, fn)).get_trace().nodes[name]


def test_the_continuous_site_check_names_the_site():
    check_continuous_site(_site(dist.Normal(torch.zeros(2), 1.0).to_event(1)), "HMC", unconstrained=True)
    check_continuous_site(_site(dist.Gamma(2.0, 1.0)), "AIS")  # constrained: fine in biject_to space
    with pytest.raises(ValueError, match=r"^Hamiltonian dynamics need a continuous latent site, and "
                                         r"NUTS takes only continuous latent sites; site 'c' is "
                                         r"discrete \(Independent, support IndependentConstraint"
                                         r".*; use RWS$"):
        check_continuous_site(_site(dist.Bernoulli(torch.ones(2) / 2).to_event(1), "c"), "NUTS",
                              hint="use RWS")
    with pytest.raises(ValueError, match=r"^MCEM runs Hamiltonian dynamics on an unconstrained latent "
                                         r"site, but 'rate' has support GreaterThanEq\(lower_bound=0.0\); "
                                         r"reparameterize it onto the real line$"):
        check_continuous_site(_site(dist.Gamma(2.0, 1.0), "rate"), "MCEM", unconstrained=True)


def test_continuous_latent_sites_skips_observed_and_subsample_sites():
    def model(x):
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", 3, subsample_size=2):
            z = pyro.sample("z", dist.Normal(0.0, s))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    trace = poutine.trace(model).get_trace(torch.zeros(2))
    assert [s["name"] for s in continuous_latent_sites(trace, "AIS")] == ["s", "z"]

    def observed_only(x):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="^AIS needs a model with latent sample sites; this model has none$"):
        continuous_latent_sites(poutine.trace(observed_only).get_trace(torch.zeros(())), "AIS")


@pytest.mark.parametrize("owner, run", [
    ("MCEM", lambda x: MCEM(train_guide=False, site="c").loss_and_grads(_discrete_model, None, x)),
    ("AIS", lambda x: ais_log_likelihood(_discrete_model, None, x, num_steps=2)),
    ("mcmc_posterior", lambda x: mcmc_posterior(_discrete_model, x[0], num_samples=2, warmup=2)),
])
def test_every_sampler_refuses_discrete_latents_with_the_one_check(owner, run):
    with pytest.raises(ValueError, match=rf"^Hamiltonian dynamics need a continuous latent site, and "
                                         rf"{owner} takes only continuous latent sites; site 'c' is "
                                         r"discrete \(Independent"):
        run(torch.zeros(3, 2))


# ---------------------------------------------------------------- the traced log joint

def _masked_model(x):
    pyro.sample("g", dist.Normal(0.0, 1.0), obs=torch.tensor(0.3))  # a global observed site
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with poutine.mask(mask=torch.tensor([True, False, True])):
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def test_log_joint_reduces_each_site_per_datapoint():
    x = torch.randn(3, 2)
    z = torch.randn(3, 2)
    got = log_joint(_masked_model, (x,))(z)
    lx = dist.Normal(z, 1.0).log_prob(x).sum(-1) * torch.tensor([1.0, 0.0, 1.0])
    want = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + lx + dist.Normal(0.0, 1.0).log_prob(
        torch.tensor(0.3)) / 3  # the global site spread over the datapoints
    assert got.shape == (3,)
    torch.testing.assert_close(got, want)
    # leading (particle) dims are kept, one or more
    zs = torch.randn(2, 4, 3, 2)
    many = log_joint(_masked_model, (x,))(zs)
    assert many.shape == (2, 4, 3)
    torch.testing.assert_close(many[1, 2], log_joint(_masked_model, (x,))(zs[1, 2]))
    # the target is the model's own posterior: scales are left out
    scaled = poutine.scale(_masked_model, scale=0.25)
    torch.testing.assert_close(log_joint(scaled, (x,))(z), got)


def test_log_joint_errors_name_the_site_and_the_owner():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="no sample site 'w'"):
        log_joint(_masked_model, (x,), site="w")(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="and MCEM takes only continuous latent sites; site 'c'"):
        log_joint(_discrete_model, (x,), site="c", owner="MCEM")(torch.zeros(3, 2))

    def two_latents(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            w = pyro.sample("w", dist.Normal(z, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(w, 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match="also samples the latent site 'w'"):
        log_joint(two_latents, (x,))(torch.zeros(3, 2))


# ---------------------------------------------------------------- HMC is written once

def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def test_only_the_mcmc_package_integrates_hamiltonian_dynamics():
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if any(m.startswith("pyro.ops.integrator") for m in _imports(p)))
    assert users == ["mcmc/hmc.py"]
    for name in ("infer/mcem.py", "infer/mcmc_refined.py", "evaluate/ais.py", "guides/hamiltonian.py"):
        assert any(m.startswith("pyro_deepgen.mcmc") for m in _imports(PACKAGE / name)), name


def test_the_mcmc_package_imports_no_part_of_pyro_deepgen_above_it():
    for path in (PACKAGE / "mcmc").glob("*.py"):
        above = [m for m in _imports(path)
                 if m.startswith("pyro_deepgen.") and not m.startswith("pyro_deepgen.mcmc")]
        assert not above, (path.name, above)
