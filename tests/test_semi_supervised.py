"""M2 (labels enumerated exactly), M1, M1+M2, and semi-supervised training."""

import dataclasses
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch.nn.functional import one_hot
from torch.utils.data import TensorDataset

from pyro_deepgen.data import check_semi_supervised, draw_labels, labelled_subset, semi_supervised_data
from pyro_deepgen.models import M1, M1M2, M2, EnumELBO, SupervisedClassifier, classification_error
from pyro_deepgen.train import fit


def small_m2(alpha=0.0, likelihood="bernoulli"):
    pyro.set_rng_seed(0)
    return M2(x_dim=6, y_dim=3, z_dim=2, hidden=(5,), alpha=alpha, likelihood=likelihood)


def binary(n=4, d=6, seed=1):
    return torch.bernoulli(torch.full((n, d), 0.5), generator=torch.Generator().manual_seed(seed))


def enumerated_guide_trace(m2, x, seed):
    """The guide's trace with ``y`` enumerated in parallel, as TraceEnum_ELBO draws it."""
    pyro.set_rng_seed(seed)
    return poutine.trace(poutine.enum(m2.guide, first_available_dim=-2)).get_trace(x)


def enum_loss(m2, x, seed, y=None):
    pyro.set_rng_seed(seed)
    args = (x,) if y is None else (x, y)
    return EnumELBO(vectorize_particles=False).loss(m2.model, m2.guide, *args)


def test_enumerated_bound_matches_a_hand_computed_sum_over_classes():
    m2, x = small_m2(), binary()
    tr = enumerated_guide_trace(m2, x, seed=3)
    ys = tr.nodes["y"]["value"]
    assert ys.shape == (3, 1) and ys.flatten().tolist() == [0, 1, 2]  # y enumerated, not sampled
    z = tr.nodes["z"]["value"]  # (classes, batch, z_dim): one draw of z per class
    assert z.shape == (3, 4, 2)
    with torch.no_grad():
        log_q_y = torch.log_softmax(m2.encoder["classifier"](x), -1)  # (batch, classes)
        total = torch.zeros(4)
        for c in range(3):
            yc = one_hot(torch.full((4,), c), 3).float()
            loc, scale = m2.encoder["z"](torch.cat([x, yc], -1))
            zc = z[c]
            term = (math.log(1 / 3)
                    + dist.Normal(0.0, 1.0).log_prob(zc).sum(-1)
                    + dist.Bernoulli(logits=m2.decoder(torch.cat([zc, yc], -1))).log_prob(x).sum(-1)
                    - dist.Normal(loc, scale).log_prob(zc).sum(-1)
                    - log_q_y[:, c])
            total += log_q_y[:, c].exp() * term
    loss = enum_loss(m2, x, seed=3)
    assert loss == pytest.approx(-total.sum().item(), rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("labelled", [False, True])
def test_kl_weights_scale_the_style_latents_kl_only(labelled):
    m2, x = small_m2(alpha=2.0), binary()
    y = torch.tensor([0, 2, 1, 2]) if labelled else None
    args = (x,) if y is None else (x, y)

    def loss(weights, seed=3):
        pyro.set_rng_seed(seed)
        return EnumELBO(vectorize_particles=False, kl_weights=weights).loss(m2.model, m2.guide, *args)

    def z_kl_term(seed=3):  # sum over datapoints of E_q(y|x)[log p(z) - log q(z|x, y)] at the same draw
        pyro.set_rng_seed(seed)
        if y is None:
            tr = enumerated_guide_trace(m2, x, seed)
            q = m2.predict_proba(x).T  # (classes, batch)
        else:
            tr = poutine.trace(m2.guide).get_trace(x, y)
            q = torch.ones(1, 4)
        z = tr.nodes["z"]["value"]
        log_ratio = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) - tr.nodes["z"]["fn"].log_prob(z)
        return (q * log_ratio).sum().item()

    plain, kl = loss(None), z_kl_term()
    for beta in (0.0, 3.0):
        # loss = -ELBO, and the KL enters the ELBO as E[log p(z) - log q(z)]: beta scales that term
        assert loss({"z": beta}) == pytest.approx(plain - (beta - 1) * kl, rel=1e-5, abs=1e-4)
    assert loss({"z": 1.0}) == plain


def test_kl_weights_bad_input():
    m2, x = small_m2(), binary()
    with pytest.raises(ValueError, match="the KL weight of site 'z' must be a finite number >= 0; got -1"):
        EnumELBO(kl_weights={"z": -1.0})
    with pytest.raises(ValueError, match="kl_weights names sites that the model and guide lack: z3"):
        EnumELBO(kl_weights={"z3": 2.0}).loss(m2.model, m2.guide, x)


def labelled_bound(m2, x, c, z):
    """-L(x, y=c) per datapoint, through the model's and guide's labelled path at ``z``."""
    y = torch.full((x.shape[0],), c)
    guide_tr = poutine.trace(poutine.condition(m2.guide, data={"z": z})).get_trace(x, y)
    model_tr = poutine.trace(poutine.condition(m2.model, data={"z": z})).get_trace(x, y)
    log_p = sum(s["fn"].log_prob(s["value"]) for n, s in model_tr.nodes.items()
                if s["type"] == "sample" and n != "data")
    return log_p - guide_tr.nodes["z"]["fn"].log_prob(z)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_unlabelled_bound_is_the_expected_labelled_bound_plus_entropy(likelihood):
    m2 = small_m2(alpha=0.0, likelihood=likelihood)
    x = binary() if likelihood == "bernoulli" else torch.randn(4, 6)
    z = enumerated_guide_trace(m2, x, seed=5).nodes["z"]["value"]
    with torch.no_grad():
        q = m2.predict_proba(x)
        minus_l = torch.stack([labelled_bound(m2, x, c, z[c]) for c in range(3)], -1)
        entropy = -(q * q.log()).sum(-1)
        minus_u = (q * minus_l).sum(-1) + entropy
    assert -enum_loss(m2, x, seed=5) == pytest.approx(minus_u.sum().item(), rel=1e-5, abs=1e-4)


def test_classification_term_adds_alpha_times_the_labels_negative_log_probability():
    x, y = binary(), torch.tensor([0, 2, 1, 2])
    plain, weighted = small_m2(alpha=0.0), small_m2(alpha=7.0)
    weighted.load_state_dict(plain.state_dict())
    nll = torch.nn.functional.cross_entropy(plain.encoder["classifier"](x), y, reduction="sum").item()
    assert enum_loss(weighted, x, 1, y) == pytest.approx(enum_loss(plain, x, 1, y) + 7.0 * nll, rel=1e-5)
    # with labels nothing is enumerated: TraceEnum_ELBO and Trace_ELBO agree on the same draw
    pyro.set_rng_seed(1)
    assert Trace_ELBO().loss(weighted.model, weighted.guide, x, y) == pytest.approx(
        enum_loss(weighted, x, 1, y), rel=1e-5)


def test_gradients_reach_the_classifier_from_unlabelled_and_labelled_batches():
    m2, x = small_m2(alpha=1.0), binary()
    for args in [(x,), (x, torch.tensor([0, 1, 2, 0]))]:
        m2.zero_grad()
        pyro.clear_param_store()
        EnumELBO().differentiable_loss(m2.model, m2.guide, *args).backward()
        g = m2.encoder["classifier"][0].weight.grad
        assert g is not None and g.abs().sum() > 0


def test_evaluators_sample_y_and_estimate_log_px():
    from pyro_deepgen.evaluate import elbo, log_likelihood
    m2, x = small_m2(), binary(20)
    ll = log_likelihood(m2.model, m2.guide, TensorDataset(x), num_samples=200)
    el = elbo(m2.model, m2.guide, TensorDataset(x), num_samples=200)
    assert ll.shape == (20,) and torch.isfinite(ll).all()
    assert (ll - el).mean() > 0  # IWAE-200 above the ELBO


def test_classify_sample_and_analogies_shapes():
    m2, x = small_m2(), binary(5)
    assert m2.classify(x).shape == (5,) and m2.classify(x).dtype == torch.long
    assert torch.allclose(m2.predict_proba(x).sum(-1), torch.ones(5))
    assert m2.sample(7).shape == (7, 6)
    assert m2.analogies(x).shape == (5, 3, 6)


@pytest.mark.parametrize("y, message", [
    (torch.tensor([0, 1, 3, 0]), r"labels must be in \[0, 3\) \(y_dim=3\); got 3"),
    (torch.tensor([0, -1, 2, 0]), r"labels must be in \[0, 3\) \(y_dim=3\); got -1"),
    (torch.tensor([0.0, 1.0, 2.0, 0.0]), "1-D integer tensor of class indices"),
    (torch.tensor([0, 1]), "labels has 2 entries but x has 4 rows"),
])
def test_bad_labels_are_rejected(y, message):
    m2 = small_m2()
    for fn in (m2.model, m2.guide):
        with pytest.raises(ValueError, match=message):
            fn(binary(), y)


def test_bad_shapes_and_options():
    m2 = small_m2()
    with pytest.raises(ValueError, match=r"M2 expects x of shape \(batch, 6\); got \(4, 5\)"):
        m2.model(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="expects x with values in"):
        m2.model(torch.full((4, 6), 0.5))
    with pytest.raises(ValueError, match="y_dim >= 2"):
        M2(6, y_dim=1)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        M2(6, alpha=-1)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        M2(6, likelihood="poisson")
    with pytest.raises(ValueError, match="unknown classifier 'tsvm'"):
        M1(6, classifier="tsvm")
    with pytest.raises(RuntimeError, match="needs fit_classifier"):
        M1(6, z_dim=2, hidden=(4,)).classify(binary())


def prototypes(n, seed=0, d=16):
    """Two classes of noisy binary prototypes."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[1.0] * (d // 2) + [0.0] * (d // 2), [0.0] * (d // 2) + [1.0] * (d // 2)])
    y = torch.randint(0, 2, (n,), generator=g)
    flip = torch.bernoulli(torch.full((n, d), 0.1), generator=g)
    return (protos[y] - flip).abs(), y


def test_m1_features_and_classifier():
    pyro.set_rng_seed(0)
    x, y = prototypes(200)
    m1 = M1(16, z_dim=2, hidden=(16,))
    svi = SVI(m1.model, m1.guide, pyro.optim.Adam({"lr": 0.03}), Trace_ELBO())
    for _ in range(150):
        svi.step(x)
    assert m1.features(x).shape == (200, 2)
    m1.fit_classifier(x[:20], y[:20])
    assert classification_error(m1, x[20:], y[20:]) < 0.1
    with pytest.raises(ValueError, match="at least two classes"):
        m1.fit_classifier(x[:3], torch.zeros(3, dtype=torch.long))


def test_m1m2_trains_m2_on_frozen_m1_features():
    pyro.set_rng_seed(0)
    x, y = prototypes(64)
    m = M1M2(16, y_dim=2, z1_dim=3, z_dim=2, m1_hidden=(16,), hidden=(8,), alpha=5.0)
    m1 = m.pretrain
    SVI(m1.model, m1.guide, pyro.optim.Adam({"lr": 0.03}), Trace_ELBO()).step(x)
    frozen = {k: v.clone() for k, v in m1.state_dict().items()}
    before = {k: v.clone() for k, v in m.m2.state_dict().items()}
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 0.03}), EnumELBO())
    for _ in range(3):
        svi.step(x)
        svi.step(x[:8], y[:8])
    assert all(torch.equal(v, m1.state_dict()[k]) for k, v in frozen.items())
    assert not all(torch.equal(v, m.m2.state_dict()[k]) for k, v in before.items())
    tr = poutine.trace(m.guide).get_trace(x)
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"] == ["z", "y", "z2"]
    assert m.classify(x).shape == (64,) and m.sample(3).shape == (3, 16)


def test_supervised_baseline_and_error_rate():
    x, y = prototypes(100)
    clf = SupervisedClassifier(16, y_dim=2, hidden=(8,)).fit(x[:20], y[:20], steps=200, lr=0.01)
    assert classification_error(clf, x[20:], y[20:]) < 0.1
    with pytest.raises(ValueError, match="need as many labels as images"):
        classification_error(clf, x, y[:3])


# ---- labelled subsets and the semi-supervised trainer ------------------------------------------


def test_draw_labels_is_balanced_seeded_and_checked():
    y = torch.arange(10).repeat_interleave(30)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    idx = draw_labels(y, 100, seed=3)
    assert idx.unique().numel() == 100 and y[idx].bincount().tolist() == [10] * 10
    assert torch.equal(idx, draw_labels(y, 100, seed=3)) and not torch.equal(idx, draw_labels(y, 100, seed=4))
    counts = y[draw_labels(y, 25, seed=0)].bincount(minlength=10)
    assert counts.sum() == 25 and set(counts.tolist()) == {2, 3}  # remainder spread over classes
    with pytest.raises(ValueError, match="asked for 301 labels, but the labelled pool holds only 300"):
        draw_labels(y, 301)
    with pytest.raises(ValueError, match=r"class 9 has 0 examples in the labelled pool, fewer than the 1"):
        draw_labels(y[y < 9], 10, num_classes=10)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\) \(num_classes=5\); got 9"):
        draw_labels(y, 10, num_classes=5)
    with pytest.raises(ValueError, match="num_labels must be a positive integer"):
        draw_labels(y, 0)
    sub = labelled_subset(TensorDataset(torch.zeros(300, 3), y), 20, seed=1)
    assert len(sub) == 20 and sub.tensors[1].bincount().tolist() == [2] * 10


def test_semi_supervised_inputs_are_checked():
    unlab = TensorDataset(torch.zeros(10, 6))
    with pytest.raises(ValueError, match=r"labelled and unlabelled data differ in their features: labelled "
                                         r"rows have shape \(5,\), unlabelled rows \(6,\)"):
        check_semi_supervised(unlab, TensorDataset(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        check_semi_supervised(unlab, TensorDataset(torch.zeros(4, 6), torch.tensor([0, 1, 2, 3])), 3)
    with pytest.raises(ValueError, match=r"must be a TensorDataset of \(x, y\)"):
        check_semi_supervised(unlab, TensorDataset(torch.zeros(4, 6)))
    assert check_semi_supervised(unlab, TensorDataset(torch.zeros(4, 6), torch.tensor([0, 1, 2, 1]))) == 3
    m2 = small_m2()
    fit_args = (m2.model, m2.guide, TensorDataset(binary(8)), EnumELBO())
    with pytest.raises(ValueError, match=r"labelled and unlabelled data differ in their features: labelled "
                                         r"rows have shape \(5,\), unlabelled rows \(6,\)"):
        fit(*fit_args, labelled=TensorDataset(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)),
            epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"the labelled dataset must yield \(x, y\) pairs"):
        fit(*fit_args, labelled=TensorDataset(binary(4)), epochs=1, progress=False)
    with pytest.raises(ValueError, match="the labelled dataset is empty"):
        fit(*fit_args, labelled=TensorDataset(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)),
            epochs=1, progress=False)
    with pytest.raises(ValueError, match="labelled_batch_size needs a labelled dataset"):
        fit(*fit_args, labelled_batch_size=4, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) \(y_dim=3\); got 5"):
        fit(*fit_args, labelled=TensorDataset(binary(2), torch.tensor([0, 5])), epochs=1, progress=False)


def test_fit_with_four_labels_learns_to_classify():
    pyro.set_rng_seed(0)
    x, y = prototypes(512)
    lab = labelled_subset(TensorDataset(x, y), 4, seed=0)
    m2 = M2(16, y_dim=2, z_dim=2, hidden=(16,), alpha=20.0)
    before = classification_error(m2, x, y)
    hist = fit(m2.model, m2.guide, TensorDataset(x), EnumELBO(), labelled=lab, labelled_batch_size=4,
               epochs=6, batch_size=64, lr=0.01, progress=False)
    assert all(math.isfinite(r["train_loss"]) for r in hist) and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert classification_error(m2, x, y) < 0.05 < before


def test_labelled_rows_cycle_and_a_resumed_run_is_bit_identical(tmp_path):
    x, y = prototypes(64)
    lab = TensorDataset(x[:5], y[:5])
    seen = []

    class Recorder(torch.nn.Module):  # a user-written ten-line model: y enumerated when unlabelled
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(16, 2)

        def model(self, x, y=None):
            logits = pyro.param("mix", torch.zeros(2, 16))
            with pyro.plate("data", x.shape[0], dim=-1):
                y = pyro.sample("y", dist.Categorical(logits=torch.zeros(2)), obs=y)
                pyro.sample("x", dist.Bernoulli(logits=logits[y]).to_event(1), obs=x)

        def guide(self, x, y=None):
            pyro.module("net", self.net)
            if y is not None:
                seen.append(y.clone())
                return
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("y", dist.Categorical(logits=self.net(x)), infer={"enumerate": "parallel"})

    def run(epochs, out=None):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        seen.clear()
        module = Recorder()
        fit(module.model, module.guide, TensorDataset(x), EnumELBO(), labelled=lab, labelled_batch_size=3,
            epochs=epochs, batch_size=16, seed=2, out=out, progress=False)
        return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}

    full = run(2)
    rows = torch.cat(seen)
    assert len(rows) == 2 * 4 * 3  # 4 steps per epoch, 3 labelled rows each
    for start in range(0, 20, 5):  # every pass over the 5 labelled rows sees each once
        assert sorted(rows[start:start + 5].tolist()) == sorted(y[:5].tolist())
    run(1, out=tmp_path)
    resumed = run(2, out=tmp_path)
    assert torch.equal(torch.cat(seen), rows[12:])
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_binarized_mnist_protocol(shared_data):
    a = semi_supervised_data("binarized_mnist", 100, seed=0, root=shared_data)
    b = semi_supervised_data("binarized_mnist", 100, seed=1, root=shared_data)
    assert len(a.heldout) == 5000 and len(a.labelled) == 100 and a.num_classes == 10
    assert a.labelled.tensors[1].bincount().tolist() == [10] * 10
    assert torch.equal(a.heldout.tensors[0], b.heldout.tensors[0])  # the held-out half does not move
    assert not torch.equal(a.indices, b.indices)  # the draw does
    # labels come from the pool half only: none of the drawn images is held out
    held = {tuple(r.nonzero().flatten().tolist()) for r in a.heldout.tensors[0]}
    assert not any(tuple(r.nonzero().flatten().tolist()) in held for r in a.labelled.tensors[0])
    with pytest.raises(ValueError, match="asked for 5001 labels, but the labelled pool holds only 5000"):
        semi_supervised_data("binarized_mnist", 5001, root=shared_data)


def test_run_config_checks_labels():
    from pyro_deepgen.experiment import RunConfig

    with pytest.raises(ValueError, match="model 'vae' takes no labels; semi-supervised: --model m2, m1, m1m2"):
        RunConfig(model="vae", labels=100)
    with pytest.raises(ValueError, match=r"model 'm2' is semi-supervised: it needs --labels N"):
        RunConfig(model="m2")
    with pytest.raises(ValueError, match="trains with --objective elbo, with no KL warm-up or free bits "
                                         r"\(beta weights its style latent's KL\); got 'iwae-5'"):
        RunConfig(model="m2", labels=10, objective="iwae-5")
    with pytest.raises(ValueError, match="no KL warm-up or free bits"):
        RunConfig(model="m2", labels=10, kl_warmup=100)
    assert RunConfig(model="m2", labels=10, beta=3.0).name == "elbo+beta-3"
    with pytest.raises(ValueError, match="labelled_batch_size must be >= 1"):
        RunConfig(model="m1", labels=10, labelled_batch_size=5)
    with pytest.raises(ValueError, match="model 'm2' takes no z_dims"):
        RunConfig(model="m2", labels=10, z_dims=(4, 2))


@pytest.mark.parametrize("model, extra", [("m2", ["--labelled-batch-size", "20"]), ("m1", []),
                                          ("m1m2", ["--z-dims", "4,4", "--beta", "2"])])
def test_cli_trains_semi_supervised_models_and_reports_test_error(model, extra, tmp_path, capsys):
    from pyro_deepgen import cli
    from pyro_deepgen.models import load_model

    out = tmp_path / model
    argv = ["train", "--model", model, "--labels", "20", "--dataset", "digits", "--hidden", "32",
            "--z-dim", "4", "--epochs", "2", "--batch-size", "256", "--out", str(out), "--quiet", *extra]
    assert cli.main(argv) == 0
    last = json.loads(capsys.readouterr().out)
    assert 0 <= last["test_error"] <= 1 and last["epoch"] == 2
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels["pool_indices"]) == 20 and labels["num_classes"] == 10
    hist = json.loads((out / "history.json").read_text())
    assert all("test_error" in r for r in hist)
    module = load_model(out)
    if model != "m1":  # M1's scikit-learn classifier is refit on the labels, not saved
        assert module.classify(torch.zeros(3, 64)).shape == (3,)
    if model == "m1m2":
        assert (out / "pretrain" / "history.json").exists()
    assert cli.main(argv) == 0  # resuming a finished run changes nothing


def test_m1m2_reuses_a_trained_first_stage(tmp_path):
    from pyro_deepgen.experiment import RunConfig, load_first_stage, train_run
    from pyro_deepgen.models import load_model

    base = RunConfig(dataset="digits", model="m1m2", labels=20, z_dims=(4, 3), hidden=(16,), epochs=1,
                     batch_size=256, extra={"m1_hidden": [16]})
    train_run(base, tmp_path / "first", progress=False)
    m1 = load_model(tmp_path / "first").pretrain.vae.state_dict()
    again = dataclasses.replace(base, labels=30, seed=1, pretrained=str(tmp_path / "first"))
    train_run(again, tmp_path / "second", progress=False)
    assert not (tmp_path / "second" / "pretrain").exists()
    reused = load_model(tmp_path / "second").pretrain.vae.state_dict()
    assert all(torch.equal(m1[k], reused[k]) for k in m1)

    with pytest.raises(ValueError, match="pretrained reuses the first stage of an m1m2 run; model 'm2'"):
        RunConfig(model="m2", labels=10, pretrained=str(tmp_path / "first"))
    with pytest.raises(FileNotFoundError, match="--pretrained must be the folder of an m1m2 run"):
        train_run(dataclasses.replace(again, pretrained=str(tmp_path / "second")), tmp_path / "third",
                  progress=False)
    wider = M1M2(64, 10, z1_dim=4, z_dim=3, m1_hidden=(8,), hidden=(16,))
    with pytest.raises(ValueError, match="holds a different M1 encoder than this run builds"):
        load_first_stage(wider.pretrain, tmp_path / "first")


def test_class_log_likelihood_is_the_labelled_elbo_per_class():
    from pyro_deepgen.evaluate import elbo as elbo_per_datapoint

    m2 = small_m2(alpha=0.0)
    x = binary(n=3)
    pyro.set_rng_seed(2)
    draws = torch.stack([m2.class_log_likelihood(x) for _ in range(3000)])  # (draws, batch, y_dim)
    for c in range(3):
        y = torch.full((3,), c, dtype=torch.long)
        ref = torch.stack([elbo_per_datapoint(m2.model, m2.guide, TensorDataset(x, y), pass_labels=True)
                           for _ in range(300)])  # (draws, batch)
        gap = draws[..., c].mean(0) + math.log(1 / 3) - ref.mean(0)  # the model's ELBO has log p(y)
        se = (draws[..., c].var(0) / 3000 + ref.var(0) / 300).sqrt()
        assert (gap.abs() < 5 * se).all(), (gap, se)
    # more samples tighten the bound on log p(x|y), in expectation
    k10 = torch.stack([m2.class_log_likelihood(x, num_samples=10) for _ in range(300)]).mean(0)
    assert (k10 > draws.mean(0)).all()
    assert m2.generative_classify(x).shape == (3,)
    with pytest.raises(ValueError, match="num_samples must be >= 1; got 0"):
        m2.class_log_likelihood(x, num_samples=0)
