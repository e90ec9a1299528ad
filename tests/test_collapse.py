"""Collapse diagnostics: per-unit KL, mutual information, per-site active units."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import TensorDataset

from pyro_deepgen.diagnostics import kl_per_unit, mutual_information
from pyro_deepgen.evaluate import active_units
from pyro_deepgen.models import VAE, SigmoidBeliefNet
from pyro_deepgen.plots import kl_per_unit as kl_plot


def _data(n=60, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.bernoulli(torch.full((n, d), 0.4), generator=g))


def test_unit_kls_sum_to_the_elbo_kl_of_a_diagonal_gaussian_guide():
    pyro.set_rng_seed(0)
    vae = VAE(12, z_dim=5, hidden=(16,))
    data = _data()
    kls = kl_per_unit(vae.model, vae.guide, data, batch_size=25)
    assert list(kls) == ["z"] and kls["z"].shape == (5,)
    with torch.no_grad():
        loc, scale = vae.encoder(data.tensors[0])
        q = dist.Normal(loc, scale).to_event(1)
        total = torch.distributions.kl_divergence(q, dist.Normal(0.0, 1.0).expand([5]).to_event(1))
    assert kls["z"].sum().item() == pytest.approx(total.mean().item(), rel=1e-5)
    assert (kls["z"] >= 0).all()


class StudentGuideModel:
    """A guide without a closed-form KL to its Normal prior: Monte Carlo per unit."""

    def __init__(self, loc, scale, df=4.0):
        self.loc, self.scale, self.df = loc, scale, df

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.StudentT(self.df, self.loc, self.scale).expand([x.shape[0], 2])
                        .to_event(1))


def test_monte_carlo_unit_kl_matches_numerical_integration():
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([0.7, 1.5])
    pair = StudentGuideModel(loc, scale)
    data = TensorDataset(torch.zeros(1000, 3))
    pyro.set_rng_seed(1)
    kls = kl_per_unit(pair.model, pair.guide, data, num_samples=20, batch_size=1000)["z"]
    grid = torch.linspace(-40, 40, 400001, dtype=torch.float64)
    for j in range(2):
        q = dist.StudentT(4.0, loc[j].double(), scale[j].double())
        lq = q.log_prob(grid)
        exact = (lq.exp() * (lq - dist.Normal(0.0, 1.0).log_prob(grid))).sum() * (grid[1] - grid[0])
        # standard error of the average over 20000 draws of log q - log p
        z = q.sample((20000,))
        se = (q.log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)).std() / math.sqrt(20000)
        assert abs(kls[j].item() - exact.item()) < 4 * se.item()


def test_mutual_information_limits():
    n = 200
    x = torch.arange(n, dtype=torch.float32).unsqueeze(-1)

    def guide_for(loc_fn, scale):
        def guide(x):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("z", dist.Normal(loc_fn(x), scale).to_event(1))
        return guide

    data = TensorDataset(x)
    # q(z|x) the same for every x: no information, the estimate is exactly 0
    same = mutual_information(guide_for(lambda x: torch.zeros_like(x), 1.0), data, batch_size=64)
    assert same == pytest.approx(0.0, abs=1e-6)
    # q(z|x) far apart for different x: z identifies x, I = log N
    apart = mutual_information(guide_for(lambda x: 100.0 * x, 0.01), data, batch_size=64)
    assert apart == pytest.approx(math.log(n), abs=1e-6)


def test_mutual_information_bad_inputs():
    vae = VAE(12, z_dim=2, hidden=(8,), flow="planar", num_flows=2)
    with pytest.raises(ValueError, match="the guide has no site 'w'; its sample sites: \\['z'\\]"):
        mutual_information(vae.guide, _data(), site="w")
    with pytest.raises(ValueError, match="evaluates the guide's density at 'z' for other datapoints'"):
        mutual_information(vae.guide, _data())
    with pytest.raises(ValueError, match="needs a non-empty dataset"):
        mutual_information(VAE(12, z_dim=2, hidden=(8,)).guide, TensorDataset(torch.zeros(0, 12)))


def test_two_layer_model_reports_each_layer():
    pyro.set_rng_seed(0)
    sbn = SigmoidBeliefNet(12, layers=(6, 3))
    data = _data()
    kls = kl_per_unit(sbn.model, sbn.guide, data)
    assert {k: tuple(v.shape) for k, v in kls.items()} == {"z": (6,), "z2": (3,)}
    assert all((v >= 0).all() for v in kls.values())  # Bernoulli units: closed form, KL >= 0
    per_layer = {site: active_units(sbn.guide, data, site=site).variance.numel() for site in kls}
    assert per_layer == {"z": 6, "z2": 3}


def test_kl_plot(tmp_path):
    fig = kl_plot({"a": torch.tensor([0.1, 2.0, 0.0]), "b": torch.tensor([1.0, 1.0, 1.0])},
                  threshold=0.01, title="t")
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([2.0, 0.1, 0.0])  # sorted, largest first


def test_sampled_posterior_means_do_not_make_collapsed_units_active():
    """A guide without ``.mean`` is averaged over draws; the noise of that average
    (Var/num_samples = 0.01 here, the threshold, for a prior-like unit) must not count."""
    from torch.distributions.transforms import AffineTransform

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = torch.stack([x[:, 0], torch.zeros(x.shape[0])], -1)  # unit 0 follows x
            base = dist.Normal(torch.zeros(x.shape[0], 2), 1.0)
            pyro.sample("z", dist.TransformedDistribution(base, [AffineTransform(loc, 1.0)])
                        .to_event(1))

    data = TensorDataset(torch.linspace(-2, 2, 400).unsqueeze(-1))
    pyro.set_rng_seed(0)
    au = active_units(guide, data, num_samples=100)
    assert au.num_active == 1 and au.variance[0] > 1.0
    # corrected: 0 up to 4 standard errors (0.01 * sqrt(2 / 400) each); uncorrected it is 0.01
    assert au.variance[1] < 4 * 0.01 * math.sqrt(2 / 400)
