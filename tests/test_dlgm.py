"""Deep latent Gaussian models: sites, objectives, bound ordering, active units per layer, CLI."""

import json

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_deepgen.diagnostics import kl_per_unit
from pyro_deepgen.evaluate import active_units, elbo, log_likelihood
from pyro_deepgen.infer import IWAE, make_objective
from pyro_deepgen.models import DLGM, build_model
from training_checks import assert_training_improves


def small(**kw):
    pyro.set_rng_seed(0)
    return DLGM(16, z_dims=(6, 3), hidden=((12,), (8,)), **kw)


def test_sites_shapes_and_registration():
    dlgm = DLGM(10, z_dims=(5, 4, 2), hidden=(8,))
    x = torch.bernoulli(torch.full((7, 10), 0.5))
    guide_tr = poutine.trace(dlgm.guide).get_trace(x)
    sites = [n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and n != "data"]
    assert sites == ["z", "z2", "z3"] == list(dlgm.sites)  # bottom-up
    assert [guide_tr.nodes[s]["value"].shape for s in sites] == [(7, 5), (7, 4), (7, 2)]
    model_tr = poutine.trace(poutine.replay(dlgm.model, trace=guide_tr)).get_trace(x)
    assert [n for n, s in model_tr.nodes.items() if s["type"] == "sample" and n != "data"] == \
        ["z3", "z2", "z", "x"]  # top-down
    assert all(guide_tr.nodes[s]["fn"].has_rsample for s in sites)
    params = pyro.get_param_store().keys()
    assert any(k.startswith("dlgm.encoder") for k in params) and any(k.startswith("dlgm.decoder") for k in params)
    assert dlgm.sample(4).shape == (4, 10) and dlgm.reconstruct(x).shape == (7, 10)
    assert dlgm.hidden == ((8,), (8,), (8,))  # one width list for every layer


@pytest.mark.parametrize("loss", [Trace_ELBO(), IWAE(5), IWAE(5, gradient="dreg")],
                         ids=["elbo", "iwae-5", "iwae-dreg-5"])
def test_objectives_train_a_dlgm(loss):
    assert_training_improves(small(), loss)


def test_bound_ordering_elbo_below_iwae_k_below_larger_k():
    dlgm = small()
    data = TensorDataset(torch.bernoulli(torch.full((64, 16), 0.3)))
    pyro.set_rng_seed(1)
    el = elbo(dlgm.model, dlgm.guide, data, num_samples=500).mean()
    iw = [log_likelihood(dlgm.model, dlgm.guide, data, num_samples=k).mean() for k in (5, 50, 1000)]
    assert el < iw[0] < iw[1] < iw[2], (el, iw)
    # and an IWAE-5 training loss is the negative of an IWAE-5 bound: above -log p(x) on average
    pyro.set_rng_seed(2)
    loss = sum(IWAE(5).loss(dlgm.model, dlgm.guide, data.tensors[0]) for _ in range(50)) / 50 / 64
    assert -loss < iw[2]


def test_active_units_per_layer_and_kl_per_layer():
    pyro.set_rng_seed(0)
    dlgm = small()
    x = torch.bernoulli(torch.full((4, 16), 0.5))[torch.randint(0, 4, (256,))]
    svi = SVI(dlgm.model, dlgm.guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(200):
        svi.step(x[torch.randint(0, 256, (64,))])
    layers = dlgm.active_units(x)
    assert [(au.site, au.variance.shape) for au in layers] == [("z", (6,)), ("z2", (3,))]
    assert all(0 <= au.num_active <= n for au, n in zip(layers, (6, 3)))
    assert layers[0].num_active >= 1  # four patterns need at least one unit in the first layer
    # the generic per-site count agrees on the first layer, where the guide's mean is exact
    generic = active_units(dlgm.guide, TensorDataset(x), site="z")
    assert generic.num_active == layers[0].num_active
    assert torch.allclose(generic.variance, layers[0].variance, atol=1e-5)
    kls = kl_per_unit(dlgm.model, dlgm.guide, TensorDataset(x))
    assert list(kls) == ["z2", "z"] and kls["z"].shape == (6,) and kls["z2"].shape == (3,)


def test_registry_and_cli(tmp_path, capsys, monkeypatch):
    from pyro_deepgen import cli

    dlgm = build_model("dlgm", x_dim=16, z_dims=[4, 2], hidden=[8])
    assert isinstance(dlgm, DLGM) and dlgm.z_dims == (4, 2)
    assert build_model("dlgm", x_dim=16).z_dims == (100, 50)
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "dlgm", "--z-dims", "4,2", "--hidden", "16", "--objective", "iwae-dreg-3",
                     "--epochs", "1", "--batch-size", "256", "--out", str(out), "--quiet"]) == 0
    cfg = json.loads((out / "run.json").read_text())
    assert cfg["model"] == "dlgm" and cfg["z_dims"] == [4, 2]
    assert json.loads((out / "model.json").read_text())["config"]["z_dims"] == [4, 2]

    # evaluation counts active units per layer by the model's own rule (z's noise averaged out for z2)
    from pyro_deepgen.experiment import evaluate_run
    from pyro_deepgen.models.dlgm import LayerActiveUnits

    calls = []

    def own_rule(self, data, *args, **kwargs):
        calls.append(len(data))
        return [LayerActiveUnits("z", 3, torch.ones(4)), LayerActiveUnits("z2", 1, torch.ones(2))]

    monkeypatch.setattr(DLGM, "active_units", own_rule)
    ev = evaluate_run(out, num_samples=2, limit=50)
    assert calls == [50]
    assert ev["active_units_per_site"] == {"z": 3, "z2": 1}
    assert ev["active_units"] == 4 and ev["latent_dim"] == 6


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one latent layer of size >= 1"):
        DLGM(16, z_dims=())
    with pytest.raises(ValueError, match="hidden has widths for 3 layers but z_dims has 2"):
        DLGM(16, z_dims=(4, 2), hidden=((8,), (8,), (8,)))
    with pytest.raises(ValueError, match=r"DLGM expects x of shape \(batch, 16\); got \(3, 15\)"):
        small().model(torch.zeros(3, 15))
    with pytest.raises(ValueError, match="model 'dlgm' takes no flow guide"):
        from pyro_deepgen.experiment import RunConfig
        RunConfig(model="dlgm", flow="planar")
    assert make_objective("iwae-dreg-5") is not None
