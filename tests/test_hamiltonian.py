"""Hamiltonian dynamics, Hamiltonian VI, MCMC-refined guides and MCEM against exact answers
on the conjugate linear-Gaussian model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from linear_gaussian import LinearGaussian
from pyro_deepgen.guides import HamiltonianGuide
from pyro_deepgen.infer import IWAE, MCEM, STL, MCMCRefinedELBO, log_joint, log_weights
from pyro_deepgen.infer.mcem import _row_keys
from pyro_deepgen.mcmc import grad_log_prob, hmc, leapfrog
from pyro_deepgen.models import VAE


def _lg(shift=0.0, log_s=0.0):
    return LinearGaussian(x_dim=3, z_dim=2).shift_guide(c=shift, log_s=log_s)


def exact_log_px(lg, x):
    """log p(x), differentiable in the model's parameters."""
    cov = lg.W @ lg.W.T + lg.sigma**2 * torch.eye(lg.x_dim, dtype=x.dtype)
    return dist.MultivariateNormal(lg.b, cov).log_prob(x)


def exact_posterior(lg, x):
    A, c, s = lg.exact_posterior_params()
    return x @ A.T + c, s


def frozen(fn):
    """``fn`` with its parameters hidden from SVI (so that only the guide's own learn)."""
    def wrapped(*args):
        with poutine.block(hide_types=["param"]):
            return fn(*args)
    return wrapped


# ---------------------------------------------------------------- dynamics

def test_log_joint_is_the_closed_form():
    lg = _lg()
    x = lg.sample_x(4)
    z = torch.randn(5, 4, 2, dtype=torch.float64)  # particles x batch x z
    got = log_joint(lg.model, (x,))(z)
    want = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(
        z @ lg.W.T + lg.b, lg.sigma).log_prob(x).sum(-1)
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, want)


def _vae_log_p():
    torch.manual_seed(1)
    vae = VAE(x_dim=6, z_dim=3, hidden=(8,)).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))
    return log_joint(vae.model, (x,)), 3


@pytest.mark.parametrize("target", ["linear_gaussian", "vae"])
def test_leapfrog_is_reversible_with_negated_momentum(target):
    if target == "vae":
        log_p, d = _vae_log_p()
    else:
        lg = _lg()
        log_p, d = log_joint(lg.model, (lg.sample_x(4),)), 2
    z, v = torch.randn(4, d, dtype=torch.float64), torch.randn(4, d, dtype=torch.float64)
    eps = torch.linspace(0.05, 0.3, d, dtype=torch.float64)  # one step size per dimension
    z1, v1, g1 = leapfrog(z, v, log_p, eps, 7, create_graph=False)
    torch.testing.assert_close(g1, grad_log_prob(log_p, z1)[1])  # the gradient to chain calls with
    z2, v2, _ = leapfrog(z1, -v1, log_p, eps, 7, create_graph=False, grad=g1)
    assert not torch.allclose(z1, z)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-10)
    torch.testing.assert_close(-v2, v, rtol=0, atol=1e-10)


@pytest.mark.parametrize("target", ["linear_gaussian", "vae"])
def test_leapfrog_preserves_volume(target):
    if target == "vae":
        log_p, d = _vae_log_p()
    else:
        lg = _lg()
        log_p, d = log_joint(lg.model, (lg.sample_x(4),)), 2
    eps = torch.linspace(0.1, 0.4, d, dtype=torch.float64)
    x0 = torch.randn(2 * d, dtype=torch.float64)

    def flow(zv):  # one datapoint: the first row of the batch
        z, v = zv[:d].expand(4, d), zv[d:].expand(4, d)
        z1, v1, _ = leapfrog(z, v, log_p, eps, 3, create_graph=True)
        return torch.cat([z1[0], v1[0]])

    jac = torch.autograd.functional.jacobian(flow, x0)
    assert jac.shape == (2 * d, 2 * d)
    assert abs(torch.linalg.det(jac).abs().item() - 1.0) < 1e-10


def test_leapfrog_gradient_flows_to_the_model_and_the_step_size():
    lg = _lg()
    eps = torch.tensor([0.2, 0.1], dtype=torch.float64, requires_grad=True)
    z, v, _ = leapfrog(torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64),
                    log_joint(lg.model, (lg.sample_x(3),)), eps, 2)
    z.sum().backward()
    assert eps.grad is not None and lg.W.grad is not None and lg.W.grad.abs().sum() > 0


def test_hmc_leaves_the_exact_posterior_invariant():
    lg = _lg()
    x = lg.sample_x(1).expand(4000, 3)
    mean, sd = exact_posterior(lg, x)
    z0 = mean + sd * torch.randn(4000, 2, dtype=torch.float64)
    z, eps, accept = hmc(z0, log_joint(lg.model, (x,)), 0.5, num_steps=5, num_leapfrog=4)
    assert 0.3 < accept.mean() < 1 and eps.shape == (4000,)
    u = (z - mean) / sd
    n = u.shape[0]
    assert (u.mean(0).abs() < 4 / math.sqrt(n)).all(), u.mean(0)
    assert ((u.var(0) - 1).abs() < 4 * math.sqrt(2 / n)).all(), u.var(0)


# ---------------------------------------------------------------- Hamiltonian VI

def test_hvi_density_gives_unbiased_importance_weights():
    """E_q[p(x, z_T) r(v') / (q(z_0) q(v))] = p(x): IWAE with many particles recovers log p(x).
    The networks are randomized so that the momentum and reverse densities matter."""
    torch.manual_seed(0)
    lg = _lg(shift=0.3, log_s=0.2)
    hvi = HamiltonianGuide(lg.guide, lg.model, x_dim=3, z_dim=2, num_transitions=2,
                           num_leapfrog=3, step_size=0.2, hidden=(8,)).double()
    with torch.no_grad():
        for p in hvi.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = lg.sample_x(3)
    with torch.no_grad():
        log_w = log_weights(lg.model, hvi, (x,), {}, 40000).log_w  # (k, batch)
    m = log_w.max(0).values
    w = (log_w - m).exp()
    est = w.mean(0).log() + m
    se = w.std(0) / w.mean(0) / math.sqrt(w.shape[0])  # delta method, on the log scale
    exact = lg.exact_log_px(x)
    assert ((est - exact).abs() < 4 * se + 1e-3).all(), (est, exact, se)


@pytest.mark.parametrize("transitions", [1, 4])
def test_trained_hvi_beats_the_base_elbo_and_stays_a_bound(transitions):
    torch.manual_seed(0)
    lg = _lg(shift=0.8, log_s=0.7)
    x = lg.sample_x(10)
    exact = lg.exact_log_px(x)
    hvi = HamiltonianGuide(frozen(lg.guide), frozen(lg.model), x_dim=3, z_dim=2,
                           num_transitions=transitions, num_leapfrog=3, step_size=0.3).double()
    with torch.no_grad():
        base_gap = (log_weights(lg.model, lg.guide, (x,), {}, 2000).log_w.mean(0) - exact).mean()
    svi = SVI(frozen(lg.model), hvi, pyro.optim.Adam({"lr": 2e-2}),
              Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1))
    for _ in range(200):
        svi.step(x)
    with torch.no_grad():
        gap = log_weights(lg.model, hvi, (x,), {}, 4000).log_w.mean(0) - exact  # (batch,)
    mean, se = gap.mean(), gap.std() / math.sqrt(4000)
    assert base_gap < -2.5
    assert mean > -0.15, f"HVI(T={transitions}) gap {mean:.3f} (base {base_gap:.3f})"
    assert mean < 4 * se, "the HVI bound exceeds log p(x)"


def test_hvi_bound_approaches_log_px_as_t_grows():
    """Same base guide, step size and training for T = 1, 2, 4: the trained bound's gap to
    the exact log p(x) shrinks with every added transition, and stays a bound."""
    gaps = []
    for transitions in (1, 2, 4):
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        lg = _lg(shift=0.8, log_s=0.7)
        x = lg.sample_x(10)
        hvi = HamiltonianGuide(frozen(lg.guide), frozen(lg.model), x_dim=3, z_dim=2,
                               num_transitions=transitions, num_leapfrog=1, step_size=0.05,
                               learn_step_size=False).double()
        svi = SVI(frozen(lg.model), hvi, pyro.optim.Adam({"lr": 2e-2}),
                  Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1))
        for _ in range(300):
            svi.step(x)
        with torch.no_grad():
            log_w = log_weights(lg.model, hvi, (x,), {}, 4000).log_w  # (k, batch)
        gap = (log_w - lg.exact_log_px(x)).mean(1)  # per particle: mean over the batch
        gaps.append((gap.mean().item(), (gap.std() / math.sqrt(gap.numel())).item()))
    for (g, se), (g_next, se_next) in zip(gaps, gaps[1:]):
        assert g_next - g > 4 * math.hypot(se, se_next), gaps
    assert all(g < 4 * se for g, se in gaps), "the HVI bound exceeds log p(x)"


def test_hvi_works_with_iwae_and_trains_the_model_through_the_dynamics():
    lg = _lg(shift=0.5)
    hvi = HamiltonianGuide(lg.guide, lg.model, x_dim=3, z_dim=2, num_transitions=1).double()
    x = lg.sample_x(4)
    loss = IWAE(num_particles=3).differentiable_loss(lg.model, hvi, x)
    loss.backward()
    for p in (lg.W, lg.A, hvi.log_step_size, hvi.momentum[0].net[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_vae_with_hvi_is_evaluated_by_the_one_evaluation_path():
    from pyro_deepgen.evaluate import elbo, log_likelihood
    from torch.utils.data import TensorDataset

    vae = VAE(x_dim=8, z_dim=2, hidden=(8,), hvi=2, hvi_leapfrog=2)
    ds = TensorDataset(torch.bernoulli(torch.full((6, 8), 0.5)))
    ll = log_likelihood(vae.model, vae.guide, ds, num_samples=50)
    lb = elbo(vae.model, vae.guide, ds, num_samples=50)
    assert ll.shape == lb.shape == (6,) and bool((ll >= lb - 0.5).all())
    assert "vae.hvi" in {n.split("$$$")[0] for n in pyro.get_param_store().keys()}


def test_hvi_bad_input():
    lg = _lg()
    with pytest.raises(ValueError, match="num_transitions >= 1"):
        HamiltonianGuide(lg.guide, lg.model, 3, 2, num_transitions=0)
    with pytest.raises(ValueError, match="num_leapfrog >= 1"):
        HamiltonianGuide(lg.guide, lg.model, 3, 2, num_leapfrog=0)
    for bad in (-0.1, 0.0, float("nan")):
        with pytest.raises(ValueError, match="step_size must be positive and finite"):
            HamiltonianGuide(lg.guide, lg.model, 3, 2, step_size=bad)
    with pytest.raises(ValueError, match="unknown reverse"):
        HamiltonianGuide(lg.guide, lg.model, 3, 2, reverse="bogus")
    hvi = HamiltonianGuide(lg.guide, lg.model, 3, 2).double()
    with pytest.raises(ValueError, match="no path derivative"):
        STL().loss_and_grads(lg.model, hvi, lg.sample_x(2))
    with pytest.raises(ValueError, match="x_dim=3"):
        hvi(torch.zeros(2, 5, dtype=torch.float64))


def test_hvi_refuses_discrete_latents():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    hvi = HamiltonianGuide(guide, model, x_dim=1, z_dim=2)
    with pytest.raises(ValueError, match="need a continuous latent site"):
        Trace_ELBO().loss(model, hvi, torch.zeros(3, 1))


def test_hvi_raises_on_diverging_dynamics():
    lg = _lg()
    hvi = HamiltonianGuide(lg.guide, lg.model, 3, 2, num_leapfrog=200, step_size=50.0).double()
    with pytest.raises(RuntimeError, match="transition 1 diverged"):
        Trace_ELBO().loss(lg.model, hvi, lg.sample_x(2))


# ---------------------------------------------------------------- MCMC-refined ELBO and MCEM

def _param_grads(objective, lg, x):
    for p in lg.parameters():
        p.grad = None
    objective.loss_and_grads(lg.model, lg.guide, x)
    return {n: p.grad.clone() for n, p in lg.named_parameters()}


def test_mcmc_refined_model_gradient_is_the_fisher_identity():
    """With the guide at the exact posterior, HMC keeps the refined samples exact, so the
    model's gradient is unbiased for d log p(x) / d theta; the guide's is the ELBO's."""
    lg = _lg()
    x = lg.sample_x(1).expand(2000, 3).contiguous()
    obj = MCMCRefinedELBO(num_steps=3, num_leapfrog=3, step_size=0.4)
    pyro.set_rng_seed(3)
    g = _param_grads(obj, lg, x)
    W, b = lg.dec["W"], lg.dec["b"]
    exact = dict(zip(("dec.W", "dec.b"), torch.autograd.grad(exact_log_px(lg, x[:1]).sum(), [W, b])))
    # the standard error: the spread of single-datapoint gradients at exact posterior draws
    mean, sd = exact_posterior(lg, x)
    z = mean + sd * torch.randn_like(mean)
    r = ((x - z @ W.T - b) / lg.sigma**2).detach()  # d log p(x|z) / d (W z + b)
    per_point = {"dec.W": r.unsqueeze(-1) * z.unsqueeze(-2), "dec.b": r}
    for name, want in exact.items():
        got = -g[name] / x.shape[0]
        se = per_point[name].std(0) / math.sqrt(x.shape[0])
        assert ((got - want).abs() < 5 * se).all(), (name, got, want, se)
    assert 0.5 < obj.accept_prob <= 1
    pyro.set_rng_seed(3)
    g_iwae = _param_grads(IWAE(num_particles=1), lg, x)
    for name in ("enc.A", "enc.c", "enc.log_s"):
        torch.testing.assert_close(g[name], g_iwae[name])


def test_mcem_chains_reach_the_exact_posterior_and_persist():
    lg = _lg()
    x = lg.sample_x(3000, seed=5)
    obj = MCEM(num_steps=25, num_leapfrog=4, step_size=0.3, target_accept=0.8, train_guide=False)
    obj.loss_and_grads(lg.model, lg.guide, x)
    assert len(obj.chains) == 3000
    mean, sd = exact_posterior(lg, x)
    z = torch.stack([obj.chains[k] for k in _row_keys(x)])
    u = (z - mean) / sd
    n = u.shape[0]
    assert (u.mean(0).abs() < 4 / math.sqrt(n)).all(), u.mean(0)
    assert ((u.var(0) - 1).abs() < 0.1).all(), u.var(0)
    state = obj.get_state()
    other = MCEM(train_guide=False)
    other.set_state(state)
    assert other.step_size == obj.step_size
    assert all(torch.equal(other.chains[k], v) for k, v in obj.chains.items())


def test_mcem_raises_the_likelihood_of_a_misfit_model():
    torch.manual_seed(0)
    lg = _lg()
    x = lg.sample_x(500, seed=2)
    with torch.no_grad():
        lg.dec["W"].mul_(0.3)
        lg.dec["b"].add_(1.0)
    before = exact_log_px(lg, x).mean().item()
    svi = SVI(lg.model, lg.guide, pyro.optim.Adam({"lr": 2e-2}),
              MCEM(num_steps=2, num_leapfrog=3, step_size=0.3, train_guide=False))
    for _ in range(60):
        svi.step(x)
    after = exact_log_px(lg, x).mean().item()
    assert after > before + 0.5, (before, after)


def test_mcmc_objectives_bad_input():
    for cls in (MCMCRefinedELBO, MCEM):
        with pytest.raises(ValueError, match="num_steps >= 1"):
            cls(num_steps=0)
        with pytest.raises(ValueError, match="num_leapfrog >= 1"):
            cls(num_leapfrog=0)
        with pytest.raises(ValueError, match="step_size must be positive"):
            cls(step_size=float("nan"))
        with pytest.raises(ValueError, match="target_accept"):
            cls(target_accept=1.5)
    lg = _lg()
    x = lg.sample_x(3)
    with torch.no_grad():
        lg.dec["b"][0] = float("nan")
    with pytest.raises(RuntimeError, match="not finite at the start of 3 chain"), \
            pyro.validation_enabled(False):
        MCEM(train_guide=False).loss_and_grads(lg.model, lg.guide, x)


def test_hmc_rejects_diverging_trajectories():
    lg = _lg()
    x = lg.sample_x(5)
    z0 = torch.randn(5, 2, dtype=torch.float64)
    z, _, accept = hmc(z0, log_joint(lg.model, (x,)), 50.0, num_steps=2, num_leapfrog=200)
    assert torch.equal(z, z0) and (accept == 0).all()


# ---------------------------------------------------------------- CLI and run configs

def test_cli_trains_and_resumes_an_hvi_vae(tmp_path, capsys):
    import json

    from pyro_deepgen.cli import main
    from pyro_deepgen.models import load_model

    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--z-dim", "2", "--hidden", "16", "--epochs", "1",
            "--hvi", "2", "--hvi-leapfrog", "2", "--out", str(run), "--quiet"]
    assert main(argv) == 0
    config = json.loads((run / "model.json").read_text())["config"]
    assert config["hvi"] == 2 and config["hvi_leapfrog"] == 2
    vae = load_model(run)
    assert vae.hvi == 2 and vae.hamiltonian.step_size.shape == (2, 2)
    assert main(["evaluate", str(run), "--num-samples", "10", "--limit", "20"]) == 0
    assert "over 20 datapoints" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--hvi", "-1"], "hvi must be >= 0"),
    (["--hvi", "1", "--hvi-leapfrog", "0"], "hvi_leapfrog >= 1"),
    (["--hvi", "1", "--model", "sbn"], "takes no Hamiltonian guide"),
    (["--objective", "stl", "--hvi", "1"], "no path derivative"),
])
def test_cli_hvi_bad_input(argv, message, tmp_path, capsys):
    from pyro_deepgen.cli import main

    base = ["train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--z-dim", "2",
            "--out", str(tmp_path / "run"), "--quiet"]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_run_names_tell_hvi_runs_apart():
    from pyro_deepgen.experiment import RunConfig

    assert RunConfig(hvi=4, hvi_leapfrog=5).name == "elbo+hvi-4x5"
    assert "hvi" not in RunConfig().model_options()


def test_evaluation_subset_is_fixed_random_and_ordered():
    from torch.utils.data import TensorDataset

    from pyro_deepgen.experiment import evaluation_subset

    labels = torch.arange(10).repeat_interleave(100)  # sorted by label, like binarized MNIST's test split
    data = TensorDataset(torch.arange(1000.0).unsqueeze(-1), labels)
    a, b = evaluation_subset(data, 200), evaluation_subset(data, 200)
    assert torch.equal(a.tensors[0], b.tensors[0]) and len(a) == 200
    assert bool((a.tensors[0][1:, 0] > a.tensors[0][:-1, 0]).all())  # original order kept
    assert len(a.tensors[1].unique()) == 10  # every class, unlike the first 200 rows
    assert evaluation_subset(data, 5000) is data
    with pytest.raises(ValueError, match="limit must be >= 1"):
        evaluation_subset(data, 0)
