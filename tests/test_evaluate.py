import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import TensorDataset

from linear_gaussian import LinearGaussian
from pyro_deepgen.evaluate import active_units, elbo, log_likelihood
from pyro_deepgen.infer import log_weights


def _mismatched(lg: LinearGaussian) -> LinearGaussian:
    """Moves the guide off the exact posterior so that the bounds are strict."""
    return lg.shift_guide(c=0.4, log_s=0.3)


def test_log_likelihood_matches_exact_linear_gaussian():
    lg = _mismatched(LinearGaussian(x_dim=3, z_dim=2))
    x = lg.sample_x(200)
    est = log_likelihood(lg.model, lg.guide, TensorDataset(x), num_samples=5000, batch_size=50)
    exact = lg.exact_log_px(x)
    assert est.shape == (200,)
    diff = est - exact
    se = diff.std() / math.sqrt(diff.numel())
    # The IWAE-5000 estimate is within 4 standard errors of the closed form, on average.
    assert diff.mean().abs() < 4 * se, (diff.mean(), se)


def test_log_likelihood_detects_a_wrong_model():
    lg = _mismatched(LinearGaussian())
    x = lg.sample_x(200)
    exact = lg.exact_log_px(x)
    with torch.no_grad():
        lg.b.add_(0.5)  # now the estimate is of a different model's log p(x)
    est = log_likelihood(lg.model, lg.guide, TensorDataset(x), num_samples=2000)
    assert (est - exact).mean().abs() > 0.1


def test_bounds_are_ordered_in_expectation():
    lg = _mismatched(LinearGaussian(x_dim=4, z_dim=3, sigma=0.5))
    x = lg.sample_x(400)
    data = TensorDataset(x)
    exact = lg.exact_log_px(x).mean()
    reps = 20
    el = torch.stack([elbo(lg.model, lg.guide, data) for _ in range(reps)])
    i5 = torch.stack([log_likelihood(lg.model, lg.guide, data, num_samples=5) for _ in range(reps)])
    i50 = torch.stack([log_likelihood(lg.model, lg.guide, data, num_samples=50) for _ in range(reps)])

    def mean_se(t):
        m = t.mean(0)  # per datapoint over repetitions
        return m.mean(), m.std() / math.sqrt(m.numel())

    (e, _), (a, _), (b, se_b) = mean_se(el), mean_se(i5), mean_se(i50)
    # paired differences, with their own standard errors
    d1 = (i5 - el).mean(0)
    d2 = (i50 - i5).mean(0)
    d3 = exact - i50.mean(0).mean()
    assert d1.mean() > 3 * d1.std() / math.sqrt(d1.numel())
    assert d2.mean() > 3 * d2.std() / math.sqrt(d2.numel())
    assert d3 > -3 * se_b
    assert e < a < b


def test_elbo_is_exact_when_the_guide_is_the_posterior():
    lg = LinearGaussian()
    x = lg.sample_x(50)
    el = elbo(lg.model, lg.guide, TensorDataset(x), num_samples=3)
    # log w = log p(x) for every z when q is the exact posterior
    torch.testing.assert_close(el, lg.exact_log_px(x), atol=1e-8, rtol=0)


def test_chunks_combine_to_the_log_mean_exp_of_all_particles(monkeypatch):
    import types

    import pyro_deepgen.evaluate.likelihood as lik

    table = torch.randn(64, 30, dtype=torch.float64) * 3
    used = []

    def fake(model, guide, args, kwargs, k, max_plate_nesting, use_scale):
        start = sum(used)
        used.append(k)
        return types.SimpleNamespace(log_w=table[start:start + k], require_per_datapoint=lambda what: None)

    monkeypatch.setattr(lik, "log_weights", fake)
    est = lik.log_likelihood_batch(None, None, (torch.zeros(30, 1),), num_samples=64, max_rows=30 * 7,
                                   max_plate_nesting=1)
    assert used == [7] * 9 + [1]
    torch.testing.assert_close(est, torch.logsumexp(table, 0) - math.log(64))


def test_user_written_model_in_ten_lines():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))

    x = torch.linspace(-2, 2, 9)
    ll = log_likelihood(model, guide, TensorDataset(x), num_samples=10)
    # the guide is the exact posterior: every weight equals p(x) = N(x; 0, 2)
    torch.testing.assert_close(ll, dist.Normal(0.0, math.sqrt(2.0)).log_prob(x))


def test_site_outside_data_plate_makes_one_joint_unit_and_evaluation_refuses_it():
    def model(x):
        s = pyro.sample("s", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(s.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("s", dist.Normal(0.0, 1.0))

    x = torch.zeros(3, 1)
    w = log_weights(model, guide, (x,), {}, 2)
    assert w.log_w.shape == (2, 1) and w.layout.frame is None  # the batch is one unit
    assert w.global_sites() == ["s"]
    with pytest.raises(ValueError, match=r"needs every sample site under the data plate 'data', "
                                         r"but \['s'\] are outside it"):
        log_likelihood(model, guide, TensorDataset(x), num_samples=4)


def test_num_samples_must_be_positive():
    lg = LinearGaussian()
    with pytest.raises(ValueError, match="num_samples must be >= 1; got 0"):
        log_likelihood(lg.model, lg.guide, TensorDataset(lg.sample_x(3)), num_samples=0)


def test_subsampled_plate_gives_unscaled_per_datapoint_weights():
    def model(x):
        with pyro.plate("data", 100, subsample=torch.arange(x.shape[0]), dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 100, subsample=torch.arange(x.shape[0]), dim=-1):
            pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))

    x = torch.tensor([0.0, 1.0, -1.0, 2.0])
    w = log_weights(model, guide, (x,), {}, 3)
    assert w.scale == 25.0
    torch.testing.assert_close(w.log_w, dist.Normal(0.0, math.sqrt(2.0)).log_prob(x).expand(3, 4))


def test_active_units_counts_informative_dimensions():
    class Guide:
        def __call__(self, x):
            with pyro.plate("data", x.shape[0], dim=-1):
                loc = torch.stack([x[:, 0], 0.01 * x[:, 1], torch.zeros_like(x[:, 0])], -1)
                pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    x = torch.randn(1000, 2)
    au = active_units(Guide(), TensorDataset(x), batch_size=300)
    assert au.num_active == 1
    assert au.variance.shape == (3,)
    assert abs(au.variance[0].item() - x[:, 0].var(unbiased=False).item()) < 1e-5
    with pytest.raises(ValueError, match="the guide has no site 'w'"):
        active_units(Guide(), TensorDataset(x), site="w")
