"""AIS and BDMC against closed forms: the linear-Gaussian model, a Gamma-Poisson
model with a constrained latent, and a small trained VAE."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import TensorDataset

from linear_gaussian import LinearGaussian
from pyro_deepgen.evaluate import (AISEstimate, ais_log_likelihood, annealing_schedule, bdmc, elbo,
                                   log_likelihood)


def _mean_and_se(est: AISEstimate, exact: torch.Tensor) -> tuple[float, float]:
    """The mean error over datapoints and its standard error from the per-datapoint ones."""
    n = exact.numel()
    return (est.log_likelihood - exact).mean().item(), est.stderr.pow(2).sum().sqrt().item() / n


@pytest.mark.parametrize("adapt", [True, False])
def test_ais_matches_the_exact_log_likelihood(adapt):
    lg = LinearGaussian(x_dim=3, z_dim=2)
    x = lg.sample_x(50)
    est = ais_log_likelihood(lg.model, None, x, num_steps=100, num_chains=16, step_size=0.7,
                             adapt_step_size=adapt)
    exact = lg.exact_log_px(x)
    assert est.log_likelihood.shape == est.stderr.shape == (50,)
    assert est.log_weights.shape == (50, 16) and est.log_likelihood.dtype == torch.float64
    err, se = _mean_and_se(est, exact)
    assert abs(err) < 4 * se, (err, se)
    assert se < 0.02  # the test has power: 100 steps leave a small standard error
    assert 0.4 < est.accept_rate.mean() < 0.95
    assert (est.divergences == 0).all() and ((1 <= est.ess) & (est.ess <= 16)).all()


def test_ais_from_the_exact_posterior_guide_is_exact():
    # log p(x, z) - log q(z|x) = log p(x) for every z: every weight is exact.
    lg = LinearGaussian(x_dim=3, z_dim=2)
    x = lg.sample_x(20)
    est = ais_log_likelihood(lg.model, lg.guide, x, num_steps=5, num_chains=4)
    torch.testing.assert_close(est.log_likelihood, lg.exact_log_px(x), atol=1e-9, rtol=0)
    assert est.stderr.max() < 1e-9


def test_ais_from_a_mismatched_guide_matches_exact_and_beats_plain_importance_sampling():
    lg = LinearGaussian(x_dim=3, z_dim=2).shift_guide(c=0.8, log_s=0.5)
    x = lg.sample_x(50)
    exact = lg.exact_log_px(x)
    one = ais_log_likelihood(lg.model, lg.guide, x, num_steps=1, num_chains=16)  # IWAE-16
    assert one.accept_rate.eq(0).all()  # no transitions: plain importance sampling
    est = ais_log_likelihood(lg.model, lg.guide, x, num_steps=50, num_chains=16)
    err, se = _mean_and_se(est, exact)
    assert abs(err) < 4 * se, (err, se)
    assert est.stderr.mean() < one.stderr.mean() / 2


def test_a_constrained_latent_moves_in_unconstrained_space():
    # A user-written Gamma-Poisson model: log p(x) is a negative binomial in closed form.
    a, b, d = 3.0, 2.0, 4

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            rate = pyro.sample("rate", dist.Gamma(x.new_tensor(a), x.new_tensor(b)))
            pyro.sample("x", dist.Poisson(rate.unsqueeze(-1).expand(rate.shape + (d,))).to_event(1),
                        obs=x)

    x = dist.Poisson(torch.tensor(1.5, dtype=torch.float64)).sample((30, d))
    s = x.sum(-1)
    exact = (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + s) - (a + s) * math.log(b + d)
             - torch.lgamma(x + 1).sum(-1))
    est = ais_log_likelihood(model, None, x, num_steps=100, num_chains=16)
    err, se = _mean_and_se(est, exact)
    assert abs(err) < 4 * se and se < 0.02, (err, se)


def test_bdmc_sandwiches_the_exact_log_likelihood():
    lg = LinearGaussian(x_dim=3, z_dim=2)
    template = torch.zeros(100, 3, dtype=torch.float64)
    res = bdmc(lg.model, None, template, num_steps=50, num_chains=8)
    assert res.x.shape == (100, 3) and res.z["z"].shape == (100, 2)
    assert not torch.equal(res.x, template)  # the data are simulated
    exact = lg.exact_log_px(res.x)
    lower, se_lo = _mean_and_se(res.forward, exact)
    upper, se_up = _mean_and_se(res.reverse, exact)
    assert lower < 3 * se_lo and upper > -3 * se_up, (lower, se_lo, upper, se_up)
    assert res.gap.shape == (100,)
    assert torch.equal(res.gap, res.upper - res.lower)
    # with few steps the bounds are loose and strictly on either side
    short = bdmc(lg.model, None, template, num_steps=3, num_chains=8)
    exact = lg.exact_log_px(short.x)
    assert (short.lower - exact).mean() < 0 < (short.upper - exact).mean()
    assert short.gap.mean() > res.gap.mean() + 0.1


def test_bdmc_with_labels_simulates_only_x():
    def model(x, y):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + y.unsqueeze(-1), 0.5).to_event(1), obs=x)

    y = torch.tensor([0.0, 10.0, -10.0]).repeat(4)
    res = bdmc(model, None, TensorDataset(torch.zeros(12, 2), y), num_steps=10, num_chains=4,
               pass_labels=True)
    assert (res.x.mean(-1) - y).abs().max() < 5  # x was drawn given each row's label
    assert torch.isfinite(res.gap).all()


def test_ais_on_a_trained_vae_is_close_to_iwae_and_above_the_elbo():
    from pyro.infer import SVI, Trace_ELBO

    from pyro_deepgen.data import load_dataset
    from pyro_deepgen.models import VAE

    x = load_dataset("digits", binarize="static").tensors[0]
    vae = VAE(x_dim=64, z_dim=5, hidden=(32,))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        svi.step(x[torch.randint(len(x), (128,), generator=g)])
    test = TensorDataset(x[:40])
    el = elbo(vae.model, vae.guide, test, num_samples=50).mean().item()
    iwae = log_likelihood(vae.model, vae.guide, test, num_samples=2000).mean().item()
    assert el < iwae - 0.2  # a gap that AIS must close too
    for guide, steps in ((None, 100), (vae.guide, 50)):  # from the prior; from q(z|x)
        est = ais_log_likelihood(vae.model, guide, test, num_steps=steps, num_chains=16)
        ais, se = est.log_likelihood.mean().item(), est.stderr.pow(2).sum().sqrt().item() / 40
        assert ais > el + max(0.1, 3 * se), (ais, se, el)
        assert abs(ais - iwae) < 0.05 + 4 * se, (ais, se, iwae)


def test_memory_bounded_batches_give_the_same_shapes():
    lg = LinearGaussian()
    x = lg.sample_x(5)
    est = ais_log_likelihood(lg.model, None, TensorDataset(x), num_steps=3, num_chains=6,
                             max_rows=20)  # 6 + 4 tuning chains: two datapoints per pass
    assert est.log_likelihood.shape == (5,) and est.log_weights.shape == (5, 6)
    assert torch.isfinite(est.log_likelihood).all()


def test_annealing_schedules():
    for kind in ("sigmoid", "linear"):
        b = annealing_schedule(10, kind)
        assert b.shape == (11,) and b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()
    s = annealing_schedule(100)
    assert s[1] < 0.01 and s[50] == pytest.approx(0.5)  # sigmoid: small steps at the ends


def _discrete_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        c = pyro.sample("c", dist.Bernoulli(x.new_full((2,), 0.5)).to_event(1))
        pyro.sample("x", dist.Normal(c, 1.0).to_event(1), obs=x)


def _no_latent_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("x", dist.Normal(x.new_zeros(2), 1.0).to_event(1), obs=x)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, "num_steps must be an integer >= 1"),
    ({"num_leapfrog": 0}, "num_leapfrog must be an integer >= 1"),
    ({"step_size": -0.1}, "step_size must be a finite number > 0"),
    ({"step_size": 0.0}, "step_size must be a finite number > 0"),
    ({"step_size": float("nan")}, "step_size must be a finite number > 0"),
    ({"num_chains": 0}, "num_chains must be an integer >= 1"),
    ({"target_accept": 1.5}, "target_accept must be in"),
    ({"schedule": "cosine"}, "unknown annealing schedule 'cosine'; valid: sigmoid, linear"),
    ({"schedule": [0.0, 0.5, 0.4, 1.0], "num_steps": 3}, "increasing numbers from 0 to 1"),
    ({"schedule": [0.0, 1.0], "num_steps": 3}, "a custom schedule must be 4"),
])
def test_bad_options_are_clear_errors(kwargs, message):
    lg = LinearGaussian()
    with pytest.raises(ValueError, match=message):
        ais_log_likelihood(lg.model, None, lg.sample_x(2), **kwargs)
    with pytest.raises(ValueError, match=message):
        bdmc(lg.model, None, lg.sample_x(2), **kwargs)


def test_bad_models_are_clear_errors():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="continuous latent sites; site 'c' is discrete"):
        ais_log_likelihood(_discrete_model, None, x, num_steps=2)
    with pytest.raises(ValueError, match="needs a model with latent sample sites"):
        ais_log_likelihood(_no_latent_model, None, x, num_steps=2)
    from pyro_deepgen.models import VAE

    vae = VAE(16, 2, (8,), flow="planar", num_flows=2)  # no inverse: q(z|x) only at its own draws
    with pytest.raises(ValueError, match="AIS from the guide needs its density at any z"):
        ais_log_likelihood(vae.model, vae.guide, torch.ones(2, 16), num_steps=2)
    with pytest.raises(ValueError, match="no site 'y' to simulate"):
        bdmc(LinearGaussian().model, None, torch.zeros(3, 3, dtype=torch.float64), num_steps=2,
             observed_site="y")


def test_nan_chains_raise():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z * float("nan"), 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match="log density is NaN at the initial state"):
        ais_log_likelihood(model, None, torch.zeros(3, 2), num_steps=3)
    with pytest.raises(ValueError, match="log density is NaN"):
        bdmc(model, None, torch.zeros(3, 2), num_steps=3)
