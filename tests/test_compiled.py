"""Compiled objectives: the same loss and gradients as the general Pyro path, the
fallback for models that are not static, the cache, and the errors."""

from __future__ import annotations

import logging

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import log_likelihood
from pyro_deepgen.evaluate.compiled import even_chunks
from pyro_deepgen.infer import IWAE, STL, VIMCO, Compiled, KLSchedule, Reinforce, with_kl
from pyro_deepgen.models import VAE

LOGGER = "pyro_deepgen.infer.compiled"


def data(batch: int = 6, dim: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, dim), 0.4), generator=g)


def store_grads() -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in pyro.get_param_store().named_parameters() if p.grad is not None}


def clear_grads() -> None:
    for _, p in pyro.get_param_store().named_parameters():
        p.grad = None


def step(objective, model, guide, x, seed: int):
    """``loss_and_grads`` from zero gradients under ``seed``: the loss and the gradients."""
    clear_grads()
    torch.manual_seed(seed)
    loss = objective.loss_and_grads(model, guide, x)
    return loss, store_grads()


def assert_same(a, b) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=1e-5, abs=1e-4)
    assert set(grads_a) == set(grads_b) and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-5, msg=name)


class UserModel:
    """A user's ten-line model: a non-amortized guide with a constrained pyro.param."""

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            w = pyro.param("w", torch.full((2, x.shape[1]), 0.1))
            pyro.sample("x", dist.Bernoulli(logits=z @ w).to_event(1), obs=x)

    def guide(self, x):
        loc = pyro.param("loc", torch.zeros(2))
        scale = pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


OBJECTIVES = {
    "trace_elbo": lambda: Trace_ELBO(),
    "meanfield": lambda: TraceMeanField_ELBO(),
    "iwae": lambda: IWAE(num_particles=5),
    "iwae_dreg": lambda: IWAE(num_particles=5, gradient="dreg"),
    "stl": lambda: STL(num_particles=2),
    "vimco": lambda: VIMCO(num_particles=4),
    "iwae_beta": lambda: with_kl(IWAE(num_particles=3), KLSchedule(beta=0.5)),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_same_loss_and_gradients_as_the_general_path(name):
    vae = VAE(x_dim=12, z_dim=3, hidden=(8,))
    x = data()
    compiled = Compiled(OBJECTIVES[name](), backend="fx")
    general = OBJECTIVES[name]()
    for seed in range(2):  # the general run, then the traced run (each compared too)
        assert_same(step(compiled, vae.model, vae.guide, x, seed), step(general, vae.model, vae.guide, x, seed))
    assert compiled.stats()["traces"] == 1 and compiled.stats()["compiled_calls"] == 0
    for seed in (5, 6):  # the compiled program, with validation on (Pyro's default)
        with pyro.validation_enabled(True):
            assert_same(step(compiled, vae.model, vae.guide, x, seed),
                        step(general, vae.model, vae.guide, x, seed))
    assert compiled.stats()["compiled_calls"] == 2
    assert compiled.stats()["fallbacks"] == []


def test_user_model_with_constrained_params():
    m = UserModel()
    x = data()
    compiled, general = Compiled(IWAE(num_particles=4), backend="fx"), IWAE(num_particles=4)
    for seed in range(4):
        assert_same(step(compiled, m.model, m.guide, x, seed), step(general, m.model, m.guide, x, seed))
    assert compiled.stats()["compiled_calls"] == 2
    assert {"w", "loc", "scale"} <= set(store_grads())


def test_svi_trains_the_same_parameters():
    x = data(batch=8)
    final = []
    for objective in (IWAE(num_particles=3), Compiled(IWAE(num_particles=3), backend="fx")):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), objective)
        losses = [svi.step(x) for _ in range(6)]
        final.append((losses, {k: v.detach().clone() for k, v in vae.state_dict().items()}))
    assert objective.stats()["compiled_calls"] == 4
    assert final[0][0] == pytest.approx(final[1][0], rel=1e-5)
    for k in final[0][1]:
        torch.testing.assert_close(final[0][1][k], final[1][1][k], rtol=1e-5, atol=1e-6)


def test_differentiable_loss_and_loss():
    vae = VAE(x_dim=12, z_dim=3, hidden=(8,))
    x = data()
    compiled, general = Compiled(IWAE(num_particles=4), backend="fx"), IWAE(num_particles=4)
    params = list(vae.parameters())
    for seed in range(4):
        torch.manual_seed(seed)
        a = compiled.differentiable_loss(vae.model, vae.guide, x)
        ga = torch.autograd.grad(a, params)
        torch.manual_seed(seed)
        b = general.differentiable_loss(vae.model, vae.guide, x)
        gb = torch.autograd.grad(b, params)
        torch.testing.assert_close(a, b)
        for u, v in zip(ga, gb):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
        torch.manual_seed(seed)
        la = compiled.loss(vae.model, vae.guide, x)
        torch.manual_seed(seed)
        assert la == pytest.approx(general.loss(vae.model, vae.guide, x), rel=1e-6)
    assert compiled.stats()["compiled_calls"] == 4  # two of each mode
    assert compiled.objective.kl_step == general.kl_step == 4


def test_cache_reuse_and_retrace_on_a_new_batch_size():
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    compiled = Compiled(IWAE(num_particles=2), backend="fx")
    for _ in range(5):
        compiled.loss_and_grads(vae.model, vae.guide, data(batch=6))
    s = compiled.stats()
    assert (s["general_calls"], s["traces"], s["compiled_calls"]) == (1, 1, 3)
    for _ in range(3):
        compiled.loss_and_grads(vae.model, vae.guide, data(batch=4))
    s = compiled.stats()
    assert (s["general_calls"], s["traces"], s["compiled_calls"]) == (2, 2, 4)
    compiled.loss_and_grads(vae.model, vae.guide, data(batch=6))  # the first program again
    assert compiled.stats()["traces"] == 2 and compiled.stats()["compiled_calls"] == 5
    assert compiled.compile_seconds > 0


class BranchOnData:
    """Data-dependent control flow: an extra latent site when the batch is mostly ones."""

    def __init__(self):
        self.net = torch.nn.Linear(1, 12)

    def model(self, x):
        pyro.module("net", self.net)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            if x.mean() > 0.5:
                z = z + pyro.sample("extra", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.net(z)).to_event(1), obs=x)

    def guide(self, x):
        loc = pyro.param("g_loc", torch.zeros(1))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            if x.mean() > 0.5:
                pyro.sample("extra", dist.Normal(loc, 1.0).to_event(1))


def test_data_dependent_branch_falls_back(caplog):
    m = BranchOnData()
    compiled, general = Compiled(Trace_ELBO(), backend="fx"), Trace_ELBO()
    zeros, ones = torch.zeros(6, 12), torch.ones(6, 12)
    for seed in range(3):
        assert_same(step(compiled, m.model, m.guide, zeros, seed), step(general, m.model, m.guide, zeros, seed))
    assert compiled.stats()["compiled_calls"] == 1
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loss, grads = step(compiled, m.model, m.guide, ones, 7)  # same shape, other branch
    assert compiled.stats()["guard_failures"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    assert "differed from the traced one" in lines[0] and "general Pyro path" in lines[0]
    # the answer came from the general path (the other branch's gradients)
    assert torch.isfinite(torch.tensor(loss)) and set(grads) == {"net$$$weight", "net$$$bias", "g_loc"}
    for seed in (8, 9):  # the signature stays on the general path, for either branch
        for x in (ones, zeros):
            assert_same(step(compiled, m.model, m.guide, x, seed), step(general, m.model, m.guide, x, seed))
    assert compiled.stats()["compiled_calls"] == 1
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1


class VaryingSites:
    """A varying number of sites from one call to the next (Python state, not the data)."""

    def __init__(self):
        self.calls = 0

    def model(self, x):
        loc = pyro.param("m_loc", torch.zeros(12))
        with pyro.plate("data", x.shape[0], dim=-1):
            for i in range(1 + self.calls % 2):
                pyro.sample(f"z{i}", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=loc.expand(x.shape)).to_event(1), obs=x)

    def guide(self, x):
        self.calls += 1  # the guide runs first: the model then follows the same count
        loc = pyro.param("q_loc", torch.zeros(12))
        with pyro.plate("data", x.shape[0], dim=-1):
            for i in range(1 + self.calls % 2):
                pyro.sample(f"z{i}", dist.Normal(loc, 1.0).to_event(1))


def test_varying_number_of_sites_falls_back(caplog):
    m = VaryingSites()
    # the plate nesting given, since guessing it would run the guide once more (m.calls)
    compiled = Compiled(IWAE(num_particles=2, max_plate_nesting=1), backend="fx")
    x = data()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        losses = [compiled.loss_and_grads(m.model, m.guide, x) for _ in range(4)]
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and "the sites differ between two runs" in lines[0]
    assert compiled.stats()["compiled_calls"] == 0 and compiled.stats()["general_calls"] == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in losses)
    # and the next call is the general path's answer
    general = IWAE(num_particles=2, max_plate_nesting=1)
    calls = m.calls
    a = step(compiled, m.model, m.guide, x, 3)
    m.calls = calls
    assert_same(a, step(general, m.model, m.guide, x, 3))


def test_stateful_objective_falls_back(caplog):
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    x = data()
    compiled, general = Compiled(Reinforce(baseline="average"), backend="fx"), Reinforce(baseline="average")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for seed in range(3):
            assert_same(step(compiled, vae.model, vae.guide, x, seed), step(general, vae.model, vae.guide, x, seed))
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and "keeps running state" in lines[0]
    assert compiled.get_state() == general.get_state()


def test_kl_warmup_compiles_after_it(caplog):
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    x = data()
    make = lambda: with_kl(IWAE(num_particles=2), KLSchedule(warmup=2))  # noqa: E731
    compiled, general = Compiled(make(), backend="fx"), make()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for seed in range(6):
            assert_same(step(compiled, vae.model, vae.guide, x, seed), step(general, vae.model, vae.guide, x, seed))
    assert any("warm-up is in progress" in r.getMessage() for r in caplog.records)
    assert compiled.stats()["compiled_calls"] == 2
    assert compiled.objective.kl_step == general.kl_step == 6


def test_bad_input_after_compiling_gets_the_models_error():
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    compiled = Compiled(Trace_ELBO(), backend="fx")
    for _ in range(3):
        compiled.loss_and_grads(vae.model, vae.guide, data())
    grey = data().clone()
    grey[0, 0] = 0.25
    with pytest.raises(ValueError, match=r"expects x with values in \{0, 1\}; got a value 0.25"):
        compiled.loss_and_grads(vae.model, vae.guide, grey)
    with pytest.raises(ValueError, match=r"VAE expects x of shape \(batch, 12\); got \(6, 5\)"):
        compiled.loss_and_grads(vae.model, vae.guide, torch.zeros(6, 5))


def test_bad_arguments_to_compiled():
    with pytest.raises(TypeError, match="Compiled\\(objective\\) needs a pyro.infer.ELBO .*got str"):
        Compiled("elbo")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; valid: inductor, fx"):
        Compiled(Trace_ELBO(), backend="tensorrt")
    with pytest.raises(TypeError, match="already Compiled"):
        Compiled(Compiled(Trace_ELBO()))
    with pytest.raises(NotImplementedError, match="no single differentiable loss"):
        vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
        Compiled(IWAE(num_particles=2, gradient="dreg"), backend="fx").differentiable_loss(
            vae.model, vae.guide, data())


def test_inductor_backend_matches_with_exact_random():
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    x = data()
    compiled = Compiled(IWAE(num_particles=3), backend="inductor", exact_random=True)
    general = IWAE(num_particles=3)
    for seed in range(4):
        assert_same(step(compiled, vae.model, vae.guide, x, seed), step(general, vae.model, vae.guide, x, seed))
    s = compiled.stats()
    assert s["compiled_calls"] == 2 and s["compile_seconds"] > 0


def test_compiled_log_likelihood_is_the_same_estimate():
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    ds = TensorDataset(data(batch=12))
    torch.manual_seed(0)
    a = log_likelihood(vae.model, vae.guide, ds, num_samples=20, batch_size=4, max_rows=40)
    torch.manual_seed(0)
    b = log_likelihood(vae.model, vae.guide, ds, num_samples=20, batch_size=4, max_rows=40, compiled="fx")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert even_chunks(5000, 655) == [625] * 8 and even_chunks(7, 3) == [3, 2, 2]


def test_compiled_log_likelihood_chunk_rows():
    vae = VAE(x_dim=12, z_dim=2, hidden=(8,))
    ds = TensorDataset(data(batch=12))
    torch.manual_seed(0)
    a = log_likelihood(vae.model, vae.guide, ds, num_samples=20, batch_size=4, max_rows=40, compiled="fx")
    torch.manual_seed(0)  # compiled_rows below max_rows sets the chunks: 12 rows = 3 particles x 4
    b = log_likelihood(vae.model, vae.guide, ds, num_samples=20, batch_size=4, compiled="fx",
                       compiled_rows=12)
    torch.manual_seed(0)
    c = log_likelihood(vae.model, vae.guide, ds, num_samples=20, batch_size=4, max_rows=12)
    torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)
    assert (a - b).abs().max() < 5.0 and not torch.equal(a, b)  # other draws, the same estimator
    with pytest.raises(ValueError, match="compiled_rows must be >= 1; got 0"):
        log_likelihood(vae.model, vae.guide, ds, num_samples=20, compiled="fx", compiled_rows=0)


def test_evaluate_run_compiles_after_training_in_the_same_process(tmp_path, caplog):
    """The store still holds the trained module's tensors under the loaded module's names;
    evaluation must register the loaded ones, not fall back to the general path."""
    from pyro_deepgen.experiment import RunConfig, evaluate_run, train_run

    cfg = RunConfig(dataset="digits", z_dim=2, hidden=(8,), epochs=1, batch_size=256)
    train_run(cfg, tmp_path / "run", progress=False)
    assert len(pyro.get_param_store()) > 0
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = evaluate_run(tmp_path / "run", num_samples=4, limit=20, compile="fx")
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == []
    general = evaluate_run(tmp_path / "run", num_samples=4, limit=20, compile="none")
    assert compiled["log_likelihood"] == pytest.approx(general["log_likelihood"], abs=1e-4)
