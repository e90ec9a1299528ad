import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from pyro_deepgen.distributions import IndependentBernoulli
from pyro_deepgen.models import VAE, build_model, load_model, save_model


def _binary(n=8, d=20):
    return torch.bernoulli(torch.full((n, d), 0.4))


def test_sites_plate_and_shapes():
    vae = VAE(20, z_dim=3, hidden=(16, 8))
    x = _binary()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    z, obs = model_tr.nodes["z"], model_tr.nodes["x"]
    assert z["value"].shape == (8, 3)
    assert obs["is_observed"] and obs["fn"].event_shape == (20,)
    for site in (z, obs, guide_tr.nodes["z"]):
        assert [(f.name, f.dim) for f in site["cond_indep_stack"]] == [("data", -1)]
    assert guide_tr.nodes["z"]["fn"].has_rsample


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_trains_with_vectorized_particles(likelihood):
    vae = VAE(20, z_dim=2, hidden=(16,), likelihood=likelihood)
    x = _binary(32)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_independent_bernoulli_matches_pyro():
    logits = torch.randn(5, 4, 7)
    x = torch.bernoulli(torch.rand(4, 7))
    torch.testing.assert_close(IndependentBernoulli(logits).log_prob(x),
                               dist.Bernoulli(logits=logits).to_event(1).log_prob(x))
    d = IndependentBernoulli(logits).expand((2, 5, 4))
    assert d.batch_shape == (2, 5, 4) and d.sample().shape == (2, 5, 4, 7)
    assert set(d.sample().unique().tolist()) <= {0.0, 1.0}


def test_bad_inputs_name_expected_and_actual():
    vae = VAE(20, z_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 20\); got \(8, 64\)"):
        vae.model(_binary(8, 64))
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 20\); got \(20,\)"):
        vae.guide(torch.zeros(20))
    x = _binary()
    x[3, 5] = 0.25
    with pytest.raises(ValueError, match=r"values in \{0, 1\}; got a value 0.25.*binarize"):
        vae.model(x)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'; valid: bernoulli, gaussian"):
        VAE(20, likelihood="poisson")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        VAE(20, activation="swish")
    with pytest.raises(ValueError, match="unknown model .gan.; valid: categorical-vae, dlgm, m1, m1m2, m2, nice, realnvp, sbn, vae"):
        build_model("gan")
    VAE(20, likelihood="gaussian").model(torch.rand(4, 20))  # grey values are fine here


def test_save_and_load_round_trip(tmp_path):
    vae = VAE(20, z_dim=2, hidden=(8,))
    save_model(vae, "vae", {"x_dim": 20, "z_dim": 2, "hidden": [8]}, tmp_path)
    again = load_model(tmp_path)
    for (k, a), (_, b) in zip(vae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="no trained model in"):
        load_model(tmp_path / "nothing")


def test_sample_decode_reconstruct_shapes():
    vae = VAE(20, z_dim=2, hidden=(8,))
    assert vae.sample(5).shape == (5, 20)
    r = vae.reconstruct(_binary(3))
    assert r.shape == (3, 20) and bool(((r > 0) & (r < 1)).all())


def test_fixed_decoder_scale():
    vae = VAE(20, z_dim=2, hidden=(8,), likelihood="gaussian", decoder_scale=0.03)
    assert vae.decoder[-1].out_features == 20  # the location only
    z = torch.randn(5, 2)
    p = vae.likelihood_dist(z)
    assert torch.equal(p.base_dist.scale, torch.full((5, 20), 0.03))
    assert torch.equal(p.mean, vae.decoder(z))
    assert VAE(20, likelihood="gaussian").decoder[-1].out_features == 40  # location and learned scale
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="decoder_scale must be a finite number > 0; got"):
            VAE(20, likelihood="gaussian", decoder_scale=bad)
    with pytest.raises(ValueError, match="decoder_scale is for likelihood='gaussian'; got likelihood='bernoulli'"):
        VAE(20, decoder_scale=0.1)
    # saved and loaded through the run config's extra options
    from pyro_deepgen.experiment import RunConfig

    cfg = RunConfig(likelihood="gaussian", z_dim=2, hidden=(8,), extra={"decoder_scale": 0.1})
    assert build_model("vae", **cfg.model_config(20)).decoder_scale == 0.1
