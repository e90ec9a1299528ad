"""The 2-D test energies of Rezende & Mohamed (2015): formulas, log Z (pyro_deepgen.data.toy),
and fitting flows to them (pyro_deepgen.guides.energy_fit)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_deepgen.data import toy
from pyro_deepgen.guides import fit_energy


def _naive(name: str, z: torch.Tensor) -> torch.Tensor:
    """Table 1 of arXiv:1505.05770, transcribed literally (exp and log, no tricks)."""
    z1, z2 = z[..., 0], z[..., 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 * torch.sigmoid((z1 - 1) / 0.3)
    if name == "U1":
        return (0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
                - torch.log(torch.exp(-0.5 * ((z1 - 2) / 0.6) ** 2)
                            + torch.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)))
    if name == "U2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "U3":
        return -torch.log(torch.exp(-0.5 * ((z2 - w1) / 0.35) ** 2)
                          + torch.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    return -torch.log(torch.exp(-0.5 * ((z2 - w1) / 0.4) ** 2)
                      + torch.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))


@pytest.mark.parametrize("name", toy.ENERGIES)
def test_energies_match_the_paper(name):
    z = 3 * torch.randn(1000, 2, dtype=torch.float64)
    assert torch.allclose(toy.energy(name, z), _naive(name, z), atol=1e-10)
    assert toy.energy(int(name[1]), z.reshape(10, 100, 2)).shape == (10, 100)
    assert torch.equal(toy.energy(name.lower(), z), toy.energy(name, z))
    # inside the square the walled energy is the energy
    inside = z.clamp(-4, 4)
    assert torch.equal(toy.walled_energy(name, inside), toy.energy(name, inside))


def test_a_value_by_hand():
    # U1(0, 0) = (2/0.4)^2/2 - log(2 exp(-(2/0.6)^2/2))
    expected = 12.5 - math.log(2) + 0.5 * (2 / 0.6) ** 2
    assert toy.energy("U1", torch.zeros(2, dtype=torch.float64)).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", toy.ENERGIES)
@pytest.mark.parametrize("wall", [toy.WALL, None])
def test_log_normalizer_converges_on_the_grid(name, wall):
    coarse = toy.log_normalizer(name, wall=wall, resolution=500)
    fine = toy.log_normalizer(name, wall=wall, resolution=1000)
    assert abs(coarse - fine) < 1e-3, (coarse, fine)


def test_log_normalizer_known_values():
    # U2 is a Gaussian of width 0.4 in z2 around a curve in [-1, 1] (its mass beyond
    # |z2| = 4, 7.5 widths away, is ~1e-13): Z = (length in z1) * 0.4 sqrt(2 pi)
    g = 0.4 * math.sqrt(2 * math.pi)
    assert toy.log_normalizer("U2", wall=None) == pytest.approx(math.log(8 * g), abs=1e-6)
    # walls: each side adds half a Gaussian of width `wall` to the z1 length
    for wall in (0.4, 1.0):
        expected = math.log((8 + wall * math.sqrt(2 * math.pi)) * g)
        assert toy.log_normalizer("U2", wall=wall) == pytest.approx(expected, abs=1e-6)
    # U1 is normalizable as it is: the walls change it by < 1e-6
    assert abs(toy.log_normalizer("U1") - toy.log_normalizer("U1", wall=None)) < 1e-6


@pytest.mark.parametrize("name", toy.ENERGIES)
def test_log_normalizer_agrees_with_importance_sampling(name):
    """An independent check: log mean exp(-U_W(z) - log q(z)) with z ~ N(0, 3^2 I),
    200k draws; the tolerance is 4 delta-method standard errors."""
    torch.manual_seed(0)
    q = torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), 3.0)
    z = q.sample((200_000,))
    log_w = -toy.walled_energy(name, z) - q.log_prob(z).sum(-1)
    w = (log_w - log_w.max()).exp()
    estimate = (w.mean().log() + log_w.max()).item()
    se = (w.std() / w.mean() / math.sqrt(len(w))).item()
    assert abs(estimate - toy.log_normalizer(name)) < 4 * se + 1e-4, (estimate, se)


@pytest.mark.parametrize("flow", ["planar", "radial", "iaf"])
def test_fit_energy_runs_and_is_a_lower_bound(flow):
    before = dict(pyro.get_param_store().items())
    fit = fit_energy("U1", flow, num_flows=2, steps=60, num_particles=64, num_samples=20_000)
    assert len(fit.losses) == 60 and all(math.isfinite(v) for v in fit.losses)
    assert fit.log_z == pytest.approx(toy.log_normalizer("U1"))
    assert fit.elbo <= fit.log_z + 4 * fit.elbo_stderr
    assert 0 < fit.elbo_stderr < 0.1
    assert dict(pyro.get_param_store().items()) == before  # its own parameter store
    row = fit.as_dict()
    assert row["gap"] == pytest.approx(fit.log_z - fit.elbo) and row["flow"] == flow


def test_fit_energy_improves_the_elbo():
    short = fit_energy("U2", "planar", num_flows=4, steps=5, num_samples=20_000)
    longer = fit_energy("U2", "planar", num_flows=4, steps=300, num_samples=20_000)
    assert longer.elbo > short.elbo + 0.5
    assert longer.gap > -4 * longer.elbo_stderr


def test_fit_energy_trains_a_deep_planar_flow():
    """32 planar layers from the identity: 400 short steps reach within 0.6 nats of log Z
    on U2 (from Pyro's random initialisation the same fit ends 3.3 nats below, seed 0)."""
    fit = fit_energy("U2", "planar", num_flows=32, steps=400, num_particles=32,
                     num_samples=20_000)
    assert fit.as_dict()["init"] == "identity"
    assert -4 * fit.elbo_stderr < fit.gap < 0.6, fit.gap


def test_density_grid():
    g = toy.density_grid("U3", resolution=80)
    h = 8 / 80
    assert g.density.shape == (80, 80) and g.extent == (-4, 4, -4, 4)
    # the target's mass inside the square: all but the walls' share (about 11% for U3)
    inside = math.exp(toy.log_normalizer("U3", wall=None) - toy.log_normalizer("U3"))
    assert g.density.sum() * h * h == pytest.approx(inside, abs=2e-3)
    # rows are z2: U3 at (z1, z2) = (x[j], y[i])
    i, j = 10, 50
    z = torch.tensor([g.x[j], g.y[i]], dtype=torch.float64)
    expected = math.exp(-toy.energy("U3", z).item() - toy.log_normalizer("U3"))
    assert g.density[i, j] == pytest.approx(expected, rel=1e-9)
    # a flow: a histogram of its samples, integrating to its mass inside the square
    from pyro_deepgen.guides import Flow
    s = toy.density_grid(Flow(2, "planar", 2), resolution=40, num_samples=20_000)
    assert s.density.shape == (40, 40) and 0.9 < s.density.sum() * (8 / 40) ** 2 <= 1 + 1e-9


def test_density_grid_of_a_fit():
    """A fit is drawn from its flow: the same picture as the fitted module's, draw for draw."""
    fit = fit_energy("U1", "planar", num_flows=2, steps=5, num_samples=1000)
    pyro.set_rng_seed(1)
    a = toy.density_grid(fit, resolution=30, num_samples=5000)
    pyro.set_rng_seed(1)
    b = toy.density_grid(fit.module, resolution=30, num_samples=5000)
    assert (a.density == b.density).all() and a.density.sum() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="unknown energy 'U5'; valid: U1, U2, U3, U4"):
        toy.energy("U5", torch.zeros(2))
    with pytest.raises(ValueError, match="unknown energy 7"):
        toy.log_normalizer(7)
    with pytest.raises(ValueError, match=r"energy expects z of shape \(\.\.\., 2\); got \(4, 3\)"):
        toy.energy("U1", torch.zeros(4, 3))
    with pytest.raises(ValueError, match="fit_energy needs a wall > 0"):
        fit_energy("U2", wall=None, steps=1)
    with pytest.raises(ValueError, match="unknown flow 'nice'"):
        fit_energy("U2", "nice", steps=1)
