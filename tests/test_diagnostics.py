import pyro
import pytest
import torch

from linear_gaussian import LinearGaussian
from pyro_deepgen.diagnostics import gradient_snr
from pyro_deepgen.infer import IWAE, STL


def test_gradient_snr_matches_direct_statistics():
    lg = LinearGaussian().shift_guide(c=0.5)
    x = lg.sample_x(8)
    pyro.set_rng_seed(0)
    stats = gradient_snr(lg.model, lg.guide, IWAE(3), (x,), num_draws=50)
    pyro.set_rng_seed(0)
    draws = []
    for _ in range(50):
        for p in lg.parameters():
            p.grad = None
        IWAE(3).loss_and_grads(lg.model, lg.guide, x)
        draws.append(lg.c.grad.clone())
    d = torch.stack(draws)
    torch.testing.assert_close(stats.mean["lg_enc$$$c"], d.mean(0))
    torch.testing.assert_close(stats.std["lg_enc$$$c"], d.std(0))
    assert set(stats.split("lg_enc")) == {"lg_enc$$$A", "lg_enc$$$c", "lg_enc$$$log_s"}
    s = stats.summary(stats.split("lg_enc"))
    assert s["num_elements"] == 6 + 2 + 2 and s["snr"] > 0


def test_stl_guide_gradient_has_zero_std_at_posterior():
    lg = LinearGaussian()
    stats = gradient_snr(lg.model, lg.guide, STL(), (lg.sample_x(8),), num_draws=10)
    assert all(stats.std[n].max() < 1e-10 for n in stats.split("lg_enc"))


def test_needs_two_draws():
    lg = LinearGaussian()
    with pytest.raises(ValueError, match="num_draws >= 2; got 1"):
        gradient_snr(lg.model, lg.guide, STL(), (lg.sample_x(2),), num_draws=1)


def test_warm_up_trains_only_the_objectives_own_parameters():
    from pyro_deepgen.diagnostics import warm_up_objective
    from pyro_deepgen.infer import NVIL

    lg = LinearGaussian().shift_guide(c=0.5)
    x = lg.sample_x(64)
    before = {n: p.detach().clone() for n, p in lg.named_parameters()}
    loss = NVIL(normalize=False)
    fresh = gradient_snr(lg.model, lg.guide, NVIL(normalize=False), (x,), num_draws=30)
    own = warm_up_objective(lg.model, lg.guide, loss, (x,), steps=200, lr=0.05)
    assert own == ["NVIL.baseline$$$0.bias", "NVIL.baseline$$$0.weight",
                   "NVIL.baseline$$$2.bias", "NVIL.baseline$$$2.weight"]
    assert all(torch.equal(before[n], p) for n, p in lg.named_parameters())
    warm = gradient_snr(lg.model, lg.guide, loss, (x,), num_draws=30)
    names = warm.split("lg_enc")
    assert warm.summary(names)["variance"] < fresh.summary(names)["variance"]


def test_constant_gradients_give_zero_or_infinite_snr_and_are_left_out_of_the_mean():
    from pyro_deepgen.diagnostics import GradientStats

    stats = GradientStats(mean={"a": torch.tensor([0.0, 2.0, 1.0])},
                          std={"a": torch.tensor([0.0, 0.0, 2.0])}, num_draws=10)
    assert stats.snr["a"].tolist() == [0.0, float("inf"), 0.5]
    s = stats.summary()
    assert s["snr"] == 0.5 and s["snr_median"] == 0.5 and s["num_elements"] == 3
    assert s["num_constant_zero"] == 1 and s["num_constant_nonzero"] == 1
    assert s["variance"] == pytest.approx(4 / 3)
