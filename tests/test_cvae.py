"""The conditional VAE: exact posterior on a linear-Gaussian conditional model, quadrants, baseline."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO

from pyro_deepgen.infer import log_weights
from pyro_deepgen.models import (CVAE, NNRegressor, conditional_nll, merge_quadrants, quadrant_dataset,
                                 quadrant_mask, split_quadrants)
from pyro_deepgen.train import fit

X, C, Z = 3, 2, 2
SIGMA, S0 = 0.6, 0.8


def inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def linear_gaussian_cvae(seed=0) -> CVAE:
    """p(z|c) = N(P c + d, S0^2 I), p(x|c, z) = N(Wz z + Wc c + b, SIGMA^2 I), with Wz's
    columns orthogonal so that the exact posterior has a diagonal covariance."""
    torch.manual_seed(seed)
    cvae = CVAE(X, C, Z, hidden=(), likelihood="gaussian").double()
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(X, Z, generator=g, dtype=torch.float64))
    wz = q * torch.tensor([1.5, 0.7], dtype=torch.float64)
    with torch.no_grad():
        cvae.prior.loc.weight.copy_(torch.randn(Z, C, generator=g, dtype=torch.float64))
        cvae.prior.loc.bias.copy_(torch.randn(Z, generator=g, dtype=torch.float64))
        cvae.prior.scale.weight.zero_()
        cvae.prior.scale.bias.fill_(inv_softplus(S0 - cvae.prior.min_scale))
        dec = cvae.decoder[0]  # linear: [z; c] -> [loc; raw scale]
        dec.weight.zero_()
        dec.weight[:X, :Z] = wz
        dec.weight[:X, Z:] = torch.randn(X, C, generator=g, dtype=torch.float64)
        dec.bias[:X] = torch.randn(X, generator=g, dtype=torch.float64)
        dec.bias[X:] = inv_softplus(SIGMA - 1e-3)
    return cvae


def exact(cvae: CVAE, x: torch.Tensor, c: torch.Tensor):
    """The exact posterior's mean and standard deviations, and log p(x|c)."""
    dec = cvae.decoder[0]
    wz, wc, b = dec.weight[:X, :Z].detach(), dec.weight[:X, Z:].detach(), dec.bias[:X].detach()
    m0 = (c @ cvae.prior.loc.weight.T + cvae.prior.loc.bias).detach()
    prec = torch.eye(Z, dtype=x.dtype) / S0**2 + wz.T @ wz / SIGMA**2
    cov = torch.linalg.inv(prec)
    assert torch.allclose(cov, torch.diag(cov.diagonal()))
    mean = (m0 / S0**2 + (x - c @ wc.T - b) @ wz / SIGMA**2) @ cov
    marg = dist.MultivariateNormal(m0 @ wz.T + c @ wc.T + b,
                                   S0**2 * wz @ wz.T + SIGMA**2 * torch.eye(X, dtype=x.dtype))
    return mean, cov.diagonal().sqrt(), marg.log_prob(x)


def data(cvae, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, C, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z = cvae.prior_dist(c).sample()
        x = cvae.likelihood_dist(z, c).sample()
    return x, c


def set_guide_to_exact(cvae: CVAE) -> None:
    """The exact posterior mean is linear in (x, c); find it by least squares."""
    x, c = data(cvae, 50, seed=7)
    mean, std, _ = exact(cvae, x, c)
    design = torch.cat([x, c, torch.ones(50, 1, dtype=x.dtype)], -1)
    coef = torch.linalg.lstsq(design, mean).solution  # (X + C + 1, Z)
    with torch.no_grad():
        cvae.encoder.loc.weight.copy_(coef[:-1].T)
        cvae.encoder.loc.bias.copy_(coef[-1])
        cvae.encoder.scale.weight.zero_()
        cvae.encoder.scale.bias.copy_(torch.log(torch.expm1(std - cvae.encoder.min_scale)))


def test_the_bound_is_tight_at_the_exact_conditional_posterior():
    cvae = linear_gaussian_cvae()
    set_guide_to_exact(cvae)
    x, c = data(cvae, 20)
    w = log_weights(cvae.model, cvae.guide, (x, c), num_particles=16, use_scale=False)
    _, _, log_px = exact(cvae, x, c)
    # every particle's log weight is log p(x|c): zero-variance importance weights
    assert torch.allclose(w.log_w, log_px.expand(16, 20), atol=1e-8)
    assert torch.allclose(-conditional_nll(cvae, x, c, num_samples=4), log_px, atol=1e-8)


def test_training_the_guide_with_a_fixed_decoder_recovers_the_exact_conditional_posterior():
    cvae = linear_gaussian_cvae()
    for net in (cvae.prior, cvae.decoder):
        net.requires_grad_(False).train(False)  # the model is fixed; only q(z|x, c) learns
    x, c = data(cvae, 256)
    pyro.set_rng_seed(0)
    svi = SVI(cvae.model, cvae.guide, pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.985}),
              TraceMeanField_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1))
    for _ in range(300):
        svi.step(x, c)
    xt, ct = data(cvae, 200, seed=3)
    mean, std, _ = exact(cvae, xt, ct)
    with torch.no_grad():
        q = cvae.guide_dist(xt, ct).base_dist
    assert torch.allclose(q.loc, mean, atol=0.03), (q.loc - mean).abs().max()
    assert torch.allclose(q.scale, std.expand_as(q.scale), atol=0.015), (q.scale, std)


def test_quadrant_masks_split_and_merge():
    assert [int(quadrant_mask(k).sum()) for k in (1, 2, 3)] == [196, 392, 588]
    m = quadrant_mask(1, (4, 4)).reshape(4, 4)
    assert m.tolist() == [[False] * 4, [False] * 4, [True, True, False, False], [True, True, False, False]]
    assert quadrant_mask(2, (4, 4)).reshape(4, 4)[2:].all() and not quadrant_mask(2, (4, 4)).reshape(4, 4)[:2].any()
    assert not quadrant_mask(3, (4, 4)).reshape(4, 4)[:2, 2:].any()  # top-right missing
    images = torch.arange(32.0).reshape(2, 16)
    for k in (1, 2, 3):
        x, c = split_quadrants(images, k, (4, 4))
        assert x.shape == (2, 16 - 4 * k) and c.shape == (2, 4 * k)
        assert torch.equal(merge_quadrants(x, c, k, (4, 4)), images)
    with pytest.raises(ValueError, match="given must be 1, 2 or 3 quadrants; got 4"):
        quadrant_mask(4)
    with pytest.raises(ValueError, match=r"expected flattened images of shape \(batch, 784\)"):
        split_quadrants(torch.zeros(2, 64), 1)


def test_cvae_trains_with_fit_on_digit_quadrants():
    """A few epochs on 8x8 digits: the CVAE's conditional NLL falls, generations have the right shape."""
    from pyro.infer import Trace_ELBO

    from pyro_deepgen.data import load_dataset

    pyro.set_rng_seed(0)
    images = load_dataset("digits", "train", binarize="static").tensors[0]
    ds = quadrant_dataset(images, 2, (8, 8))
    x, c = ds.tensors
    cvae = CVAE(32, 32, z_dim=4, hidden=(64,))
    before = conditional_nll(cvae, x[:200], c[:200], num_samples=20).mean()
    fit(cvae.model, cvae.guide, ds, Trace_ELBO(), epochs=8, batch_size=64, lr=3e-3, pass_labels=True,
        progress=False)
    after = conditional_nll(cvae, x[:200], c[:200], num_samples=20).mean()
    assert after < before - 3, (before, after)
    assert cvae.generate(c[:5], num_samples=2).shape == (2, 5, 32)
    nn_baseline = NNRegressor(32, 32, hidden=(64,)).fit(x, c, steps=300, lr=3e-3)
    assert nn_baseline.nll(x[:200], c[:200]).shape == (200,)
    assert merge_quadrants(cvae.generate(c[:5]), c[:5], 2, (8, 8)).shape == (5, 64)


def test_bad_inputs():
    cvae = CVAE(6, 4, z_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"CVAE expects c of shape \(batch, 4\); got \(3, 5\)"):
        cvae.model(torch.zeros(3, 6), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="one condition per datapoint; got 3 rows of x and 2 of c"):
        cvae.guide(torch.zeros(3, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="expects x with values in"):
        cvae.model(torch.full((3, 6), 0.3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="x_dim, cond_dim and z_dim >= 1"):
        CVAE(6, 0)
