"""NICE and RealNVP: exact densities, training, inpainting, dequantization and bits/dim."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.autograd.functional import jacobian
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import log_likelihood
from pyro_deepgen.infer.weights import log_weights
from pyro_deepgen.models import build_model, load_model, save_model
from pyro_deepgen.models.nice import (
    NICE,
    AdditiveCoupling,
    AffineCoupling,
    DequantizedDataset,
    DiagonalScale,
    FlowDistribution,
    FlowModel,
    RealNVP,
    bits_per_dim,
    dequantize,
    inpaint,
)
from pyro_deepgen.train import fit

FLOWS = {
    "nice-logistic": lambda d: NICE(d, num_couplings=4, hidden=(16, 16), prior="logistic"),
    "nice-gaussian": lambda d: NICE(d, num_couplings=3, hidden=(16,), prior="gaussian", activation="tanh"),
    "realnvp": lambda d: RealNVP(d, num_couplings=4, hidden=(16, 16)),
}


def randomized(flow, scale: float = 0.4):
    """The flows start at the identity (zero output layers); tests need a non-trivial map."""
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, scale)
    return flow


@pytest.mark.parametrize("name", FLOWS)
def test_invertible(name):
    flow = randomized(FLOWS[name](5))  # odd x_dim: partitions of 3 and 2
    x = torch.randn(64, 5)
    z, _ = flow.to_latent(x)
    assert (z - x).abs().max() > 0.1  # not the identity
    assert torch.allclose(flow.to_data(z), x, atol=1e-5)
    for t in flow.transforms:  # each layer through Pyro's Transform interface
        assert torch.allclose(t.inv(t(x)), x, atol=1e-5)


@pytest.mark.parametrize("name", FLOWS)
def test_log_det_matches_autograd_jacobian(name):
    flow = randomized(FLOWS[name](5)).double()
    torch.manual_seed(1)
    for x in torch.randn(4, 5, dtype=torch.float64):
        z, log_det = flow.to_latent(x)
        jac = jacobian(lambda v: flow.to_latent(v)[0], x)
        assert torch.allclose(log_det, torch.linalg.slogdet(jac)[1], atol=1e-10)
        # change of variables against the prior
        assert torch.allclose(flow.log_prob(x), flow.prior().log_prob(z) + log_det, atol=1e-10)
        for t in flow.transforms:  # each layer's forward log|det J| (Pyro's convention)
            jac = jacobian(t, x)
            assert torch.allclose(t.log_abs_det_jacobian(x, t(x)), torch.linalg.slogdet(jac)[1],
                                  atol=1e-10)


@pytest.mark.parametrize("name", FLOWS)
def test_density_integrates_to_one_on_a_grid(name):
    torch.manual_seed(0)
    flow = randomized(FLOWS[name](2), scale=0.3).double()
    # Box and tails: the box [-L, L]^2 must hold all but a negligible mass; check with samples.
    L, n = 16.0, 401
    samples = flow.sample(100_000)
    outside = (samples.abs() > L).any(-1).double().mean().item()
    assert outside < 2e-4, outside
    # Midpoint rule with step h = 0.08: its error is O(h^2) for this continuous, piecewise-smooth
    # density (it changes by < 2e-5 between h = 0.16, 0.08 and 0.04 for these flows), and the
    # logistic prior's tails leave ~1e-4 outside the box: 1e-3 bounds both with room to spare.
    h = 2 * L / n
    g = -L + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(xy).exp().sum().item() * h * h
    assert abs(mass - 1) < 1e-3, mass


def test_log_prob_by_hand_and_against_pyro():
    # Couplings start at the identity, so NICE is x = z * exp(s): log p(x) = sum log p_Z(x e^-s) - sum s.
    flow = NICE(3, hidden=(4,), prior="logistic")
    with torch.no_grad():
        flow.transforms[0].log_scale.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.tensor([[0.3, -2.0, 1.0]])
    z = x * torch.exp(-flow.transforms[0].log_scale.detach())
    logistic = -z - 2 * torch.nn.functional.softplus(-z)
    expected = logistic.sum(-1) - 1.5
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-6)
    # A trained-looking flow agrees with Pyro's TransformedDistribution over the same layers.
    for flow in (randomized(NICE(4, hidden=(8,))), randomized(RealNVP(4, hidden=(8,)))):
        x = torch.randn(10, 4)
        pyro_dist = dist.TransformedDistribution(flow.prior(), list(flow.transforms))
        assert torch.allclose(flow.log_prob(x), pyro_dist.log_prob(x), atol=1e-5)


def test_scoring_the_same_tensor_after_an_update_is_fresh():
    flow = randomized(RealNVP(4, hidden=(8,)))
    x = torch.randn(16, 4)
    opt = torch.optim.Adam(flow.parameters(), lr=0.1)
    values = []
    for _ in range(3):
        loss = -flow.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()  # a cached graph would fail here ("backward through the graph a second time")
        opt.step()
        values.append(loss.item())
    assert len(set(values)) == 3


def test_sites_shapes_and_vectorized_weights():
    flow = randomized(NICE(6, hidden=(8,)))
    x = torch.rand(7, 6)
    model_tr = poutine.trace(flow.model).get_trace(x)
    guide_tr = poutine.trace(flow.guide).get_trace(x)
    sites = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample" and n != "data"}
    assert list(sites) == ["x"] and sites["x"]["is_observed"]
    assert not [s for s in guide_tr.nodes.values() if s["type"] == "sample"]
    assert any(n.startswith("nice.flow$$$") for n in pyro.get_param_store().keys())
    w = log_weights(flow.model, flow.guide, (x,), num_particles=3)
    assert w.log_p.shape == (3, 7)
    assert torch.allclose(w.log_w, flow.log_prob(x).expand(3, 7), atol=1e-5)
    assert flow.sample(5).shape == (5, 6) and torch.isfinite(flow.sample(200)).all()


@pytest.mark.parametrize("cls", [NICE, RealNVP])
def test_fit_by_maximum_likelihood(cls):
    torch.manual_seed(0)
    mix = torch.randn(6, 6)
    data = torch.randn(512, 6) @ mix * 0.3 + 1.0
    ds = TensorDataset(data)
    flow = cls(6, hidden=(32,))
    before = log_likelihood(flow.model, flow.guide, ds, num_samples=1)
    assert torch.allclose(before, flow.log_prob(data).detach(), atol=1e-5)  # exact with one sample
    history = fit(flow.model, flow.guide, ds, Trace_ELBO(), epochs=4, batch_size=64, lr=1e-2,
                  progress=False)
    after = log_likelihood(flow.model, flow.guide, ds, num_samples=1)
    assert after.mean() > before.mean() + 2.0, (before.mean(), after.mean())
    assert history[-1]["train_loss"] == pytest.approx(-after.mean().item(), abs=0.5)


def test_inpainting_raises_log_p_and_keeps_observed_pixels():
    torch.manual_seed(0)
    flow = randomized(NICE(8, hidden=(16,)), scale=0.3)
    x = torch.rand(5, 8)
    mask = torch.zeros(5, 8, dtype=torch.bool)
    mask[:, :4] = True  # the first four pixels are missing
    out = inpaint(flow, x, mask, steps=60, lr=0.02, snapshots=20)
    assert torch.equal(out.x[~mask], x[~mask])
    assert out.x[mask].min() >= 0 and out.x[mask].max() <= 1
    assert out.log_prob.shape == (61, 5)
    assert (out.log_prob[-1] > out.log_prob[0] + 0.1).all(), out.log_prob[[0, -1]]
    assert torch.allclose(out.log_prob[-1], flow.log_prob(out.x).detach(), atol=1e-5)
    assert [s for s, _ in out.snapshots] == [0, 20, 40, 60]
    # a (D,) mask, start from x, noisy steps, the method form, no projection
    noisy = flow.inpaint(x, mask[0].float(), steps=30, lr=0.02, noise=1.0, init="given", bounds=None)
    assert torch.equal(noisy.x[:, 4:], x[:, 4:])
    assert noisy.log_prob[-1].mean() > noisy.log_prob[0].mean()
    assert inpaint(flow, x, mask, steps=0).log_prob.shape == (1, 5)
    assert [s for s, _ in inpaint(flow, x, mask, steps=5, snapshots=[0, 2, 5]).snapshots] == [0, 2, 5]


def test_dequantize_by_hand():
    u = torch.tensor([0.5, 0.0, 0.25])
    expected = torch.tensor([0.5 / 256, 255 / 256, 128.25 / 256])
    assert torch.allclose(dequantize(torch.tensor([0, 255, 128]), noise=u), expected)
    assert torch.allclose(dequantize(torch.tensor([0.0, 1.0, 128 / 255]), noise=u), expected)
    assert torch.allclose(dequantize(torch.tensor([0, 3]), levels=4, noise=torch.tensor(0.5)),
                          torch.tensor([0.125, 0.875]))
    k = torch.randint(0, 256, (1000,))
    y = dequantize(k.float() / 255, generator=torch.Generator().manual_seed(0))
    assert ((y >= k / 256) & (y < (k + 1) / 256)).all()
    assert torch.equal(y, dequantize(k, generator=torch.Generator().manual_seed(0)))
    ds = DequantizedDataset(k.float()[:, None] / 255, k)
    (a, ka), (b, _) = ds[:10], ds[:10]
    assert torch.equal(ka, k[:10]) and not torch.equal(a, b)  # fresh noise on every access
    assert ((a[:, 0] >= ka / 256) & (a[:, 0] < (ka + 1) / 256)).all()


def test_bits_per_dim_by_hand():
    assert bits_per_dim(0.0, x_dim=784) == pytest.approx(8.0)  # uniform on the cube = 256 levels
    assert bits_per_dim(-784 * math.log(2), x_dim=784) == pytest.approx(9.0)
    # NICE's MNIST log-likelihood of 1980.50 nats on [0, 1]^784: 8 - 1980.5 / (784 ln 2)
    assert bits_per_dim(1980.50, x_dim=784) == pytest.approx(4.35556, abs=1e-4)
    assert bits_per_dim(torch.tensor([0.0, 2 * math.log(2)]), x_dim=2, levels=4).tolist() == \
        pytest.approx([2.0, 1.0])


def test_bits_per_dim_bounds_the_discrete_likelihood():
    # Jensen: -log2 P(k) / D <= bits_per_dim(E_u log p((k + u) / levels)), P(k) the bin's mass.
    torch.manual_seed(0)
    flow = randomized(NICE(2, hidden=(8,)), scale=0.5).double()
    levels, n = 4, 200
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    u = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    for k in ([0, 0], [1, 3], [2, 1]):
        with torch.no_grad():
            lp = flow.log_prob(dequantize(torch.tensor(k), levels, noise=u))
        log_mass = torch.logsumexp(lp, 0) - math.log(n * n) - 2 * math.log(levels)
        assert -log_mass / (2 * math.log(2)) <= bits_per_dim(lp.mean(), x_dim=2, levels=levels)


def test_registry_build_and_save_load(tmp_path):
    x = torch.rand(3, 10)
    for name, cls in (("nice", NICE), ("realnvp", RealNVP)):
        config = {"x_dim": 10, "hidden": [8], "activation": "relu", "num_couplings": 2}
        flow = randomized(build_model(name, **config))
        assert isinstance(flow, cls) and flow.num_couplings == 2
        save_model(flow, name, config, tmp_path / name)
        assert torch.allclose(load_model(tmp_path / name).log_prob(x), flow.log_prob(x))


def test_bad_inputs():
    flow = NICE(6, hidden=(4,))
    with pytest.raises(ValueError, match=r"NICE expects x of shape \(batch, 6\); got \(3, 5\)"):
        flow.model(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"NICE expects x of shape \(\.\.\., 6\); got \(3, 5\)"):
        flow.log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="unknown prior 'laplace'; valid: logistic, gaussian"):
        NICE(6, prior="laplace")
    with pytest.raises(ValueError, match=r"NICE needs x_dim >= 2 \(a coupling splits x in two\); got 1"):
        NICE(1)
    with pytest.raises(ValueError, match="RealNVP needs num_couplings >= 1; got 0"):
        RealNVP(4, num_couplings=0)
    with pytest.raises(ValueError, match=r"NICE needs hidden widths >= 1; got \(4, 0\)"):
        NICE(4, hidden=(4, 0))
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        NICE(4, hidden=(4,), activation="sigmoid")
    with pytest.raises(ValueError, match="initialize_scale needs a batch of at least 2 rows; got 1"):
        flow.initialize_scale(torch.rand(1, 6))
    with pytest.raises(ValueError, match="FlowModel.initialize_scale needs a DiagonalScale as the first"):
        FlowModel(3, [AdditiveCoupling(3, 0, (4,))]).initialize_scale(torch.rand(4, 3))
    with pytest.raises(ValueError, match="a coupling needs x_dim >= 2 and parity 0 or 1; got x_dim=4, parity=2"):
        AffineCoupling(4, parity=2)
    with pytest.raises(ValueError, match="FlowDistribution needs a base with event dim 1"):
        FlowDistribution(dist.Normal(torch.zeros(2), 1.0), [DiagonalScale(2)])
    x = torch.rand(3, 6)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 5\) but x has shape \(3, 6\)"):
        inpaint(flow, x, torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"mask must be boolean or 0/1 \(1 = missing pixel\)"):
        inpaint(flow, x, torch.full((6,), 0.5))
    with pytest.raises(ValueError, match=r"inpaint expects x of shape \(batch, D\); got \(6,\)"):
        inpaint(flow, x[0], torch.ones(6))
    with pytest.raises(ValueError, match="need steps >= 0, lr > 0 and noise >= 0; got -1"):
        inpaint(flow, x, torch.ones(6), steps=-1)
    with pytest.raises(ValueError, match="unknown init 'zeros'; valid: uniform, given"):
        inpaint(flow, x, torch.ones(6), init="zeros")
    with pytest.raises(ValueError, match="init='uniform' needs bounds"):
        inpaint(flow, x, torch.ones(6), bounds=None)
    with pytest.raises(ValueError, match=r"float pixel data must be in \[0, 1\]"):
        dequantize(torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match="float pixel data must be on the grid k / 255 of 256 levels"):
        dequantize(torch.tensor([0.001]))
    with pytest.raises(ValueError, match="integer pixel levels must be in 0..255; got values in"):
        dequantize(torch.tensor([0, 256]))
    with pytest.raises(ValueError, match="levels must be >= 2; got 1"):
        dequantize(torch.tensor([0]), levels=1)
    with pytest.raises(ValueError, match=r"noise must be in \[0, 1\]"):
        dequantize(torch.tensor([0]), noise=torch.tensor(2.0))
    with pytest.raises(ValueError, match="float pixel data must be on the grid"):
        DequantizedDataset(torch.rand(4, 3))
    with pytest.raises(ValueError, match="need x_dim >= 1 and levels >= 2; got x_dim=0, levels=256"):
        bits_per_dim(0.0, x_dim=0)


@pytest.mark.parametrize("cls", [NICE, RealNVP])
def test_initialize_scale_matches_the_prior_spread(cls):
    flow = randomized(cls(6, hidden=(8,)), scale=0.2)
    x = torch.rand(500, 6) * torch.tensor([1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0])
    flow.initialize_scale(x)
    z, _ = flow.to_latent(x)
    assert torch.allclose(z.std(0), flow.prior().stddev, rtol=1e-4)


def test_layers_compose_with_pyro_and_handle_batch_shapes():
    layers = [DiagonalScale(3), AdditiveCoupling(3, 0, (4,)), AffineCoupling(3, 1, (4,))]
    for t in layers:
        randomized(t)
    base = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    d = FlowDistribution(base, layers)
    x = d.rsample((2, 5))
    assert x.shape == (2, 5, 3) and d.log_prob(x).shape == (2, 5)
    assert d.expand((4, 1)).log_prob(torch.randn(7, 3)).shape == (4, 7)
