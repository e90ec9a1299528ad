"""NUTS posteriors of one datapoint as ArviZ InferenceData, against the exact
posterior of the linear-Gaussian model."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from linear_gaussian import LinearGaussian
from pyro_deepgen.mcmc import mcmc_posterior

with warnings.catch_warnings():  # arviz announces its refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def test_nuts_mean_and_variance_match_the_exact_posterior_within_mcse():
    lg = LinearGaussian(x_dim=3, z_dim=2)
    x = lg.sample_x(1)[0]
    before = {k: v.clone() for k, v in lg.state_dict().items()}
    idata = mcmc_posterior(lg.model, x, num_samples=300, warmup=200, chains=2)
    assert isinstance(idata, az.InferenceData)
    assert idata.posterior["z"].shape == (2, 300, 2)
    assert idata.sample_stats["diverging"].shape == (2, 300)
    np.testing.assert_allclose(idata.observed_data["x"].values, x.numpy())

    A, c, s = lg.exact_posterior_params()
    mean, sd = (A @ x + c).numpy(), s.numpy()
    post = idata.posterior["z"].values.reshape(-1, 2)
    mcse_mean = az.mcse(idata, method="mean")["z"].values
    mcse_sd = az.mcse(idata, method="sd")["z"].values
    assert (np.abs(post.mean(0) - mean) < 4 * mcse_mean).all(), (post.mean(0), mean, mcse_mean)
    assert (np.abs(post.std(0) - sd) < 4 * mcse_sd).all(), (post.std(0), sd, mcse_sd)
    assert (az.rhat(idata)["z"].values < 1.05).all()
    assert (az.ess(idata)["z"].values > 100).all()
    # the decoder stays as it was: NUTS moves z only
    for k, v in lg.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_chains_are_seeded_and_the_global_rng_is_restored():
    lg = LinearGaussian()
    x = lg.sample_x(1)  # shape (1, x_dim) works too
    pyro.set_rng_seed(5)
    state = torch.get_rng_state()
    a = mcmc_posterior(lg.model, x, num_samples=20, warmup=10, chains=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = mcmc_posterior(lg.model, x, num_samples=20, warmup=10, chains=2, seed=3)
    np.testing.assert_array_equal(a.posterior["z"].values, b.posterior["z"].values)
    # the chains differ from each other: each starts from its own prior draw
    assert not np.array_equal(a.posterior["z"].values[0], a.posterior["z"].values[1])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # arviz on newer matplotlib
def test_model_arguments_and_plot_trace():
    def model(x, y):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + y.unsqueeze(-1), 0.1).to_event(1), obs=x)

    idata = mcmc_posterior(model, torch.tensor([5.0, 5.0]), num_samples=50, warmup=50, chains=1,
                           args=(torch.tensor([5.0]),))
    assert np.abs(idata.posterior["z"].values).mean() < 0.5  # x - y = 0
    import matplotlib

    matplotlib.use("Agg")
    axes = az.plot_trace(idata)
    assert axes.shape[0] == 1
    import matplotlib.pyplot as plt

    plt.close("all")


def _nan_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z * float("nan"), 1.0).to_event(1), obs=x)


def _discrete_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        c = pyro.sample("c", dist.Bernoulli(x.new_full((2,), 0.5)).to_event(1))
        pyro.sample("x", dist.Normal(c, 1.0).to_event(1), obs=x)


def test_bad_inputs_are_clear_errors():
    lg = LinearGaussian()
    x = lg.sample_x(2)
    with pytest.raises(ValueError, match=r"one datapoint, of shape \(x_dim,\) or \(1, x_dim\)"):
        mcmc_posterior(lg.model, x, num_samples=5, warmup=5)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        mcmc_posterior(lg.model, x[0], num_samples=0)
    with pytest.raises(ValueError, match="chains must be an integer >= 1"):
        mcmc_posterior(lg.model, x[0], chains=0)
    with pytest.raises(ValueError, match="warmup must be an integer >= 0"):
        mcmc_posterior(lg.model, x[0], warmup=-1)
    with pytest.raises(ValueError, match="continuous latent sites; site 'c' is discrete"):
        mcmc_posterior(_discrete_model, torch.zeros(2), num_samples=5, warmup=5)


def test_nan_chains_raise():
    with pytest.raises(ValueError, match="chain 0 found no starting point with a finite log density"):
        mcmc_posterior(_nan_model, torch.zeros(2), num_samples=5, warmup=5)
