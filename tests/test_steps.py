"""The training loop's pieces: the step protocol, the training state, the strategy and the
objectives' declared state."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_deepgen.checkpoints import CHECKPOINT, TrainState, load_checkpoint
from pyro_deepgen.distributed import DataParallel, Strategy, make_strategy
from pyro_deepgen.infer import IWAE, MCEM, Compiled, KLSchedule, Objective, Stateful, with_kl
from pyro_deepgen.models import VAE
from pyro_deepgen.steps import SVIStep, Step, TrainingStep, as_training_step
from pyro_deepgen.train import fit

DATA = TensorDataset(torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) + 2.0)


class MeanStep:
    """A training step that is not SVI: gradient descent on the squared distance of a
    Pyro parameter to each batch, with its own running state (the rows seen)."""

    def __init__(self, lr: float = 0.1):
        self.lr, self.rows = lr, 0

    def step(self, batch, state):
        (x,) = batch
        mean = pyro.param("mean", torch.zeros(3))
        loss = (x - mean).pow(2).sum()
        (g,) = torch.autograd.grad(loss, [pyro.param("mean").unconstrained()])
        with torch.no_grad():
            pyro.param("mean").unconstrained().sub_(self.lr * g / len(x))
        self.rows += len(x)
        return {"loss": loss.item(), "rows": float(len(x))}

    # the Stateful protocol: kept in checkpoints
    def get_state(self):
        return {"rows": self.rows}

    def set_state(self, state):
        self.rows = state["rows"]

    def sync_state(self, reduce_sum):
        pass

    def merge_rows(self, exchange):
        pass


def test_fit_drives_a_step_that_is_not_svi_and_resumes_it_bit_identical(tmp_path):
    full = MeanStep()
    hist = fit(dataset=DATA, step=full, epochs=4, batch_size=8, progress=False, seed=1)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4] and hist[-1]["train_loss"] < hist[0]["train_loss"]
    mean = pyro.param("mean").detach().clone()
    assert torch.allclose(mean, DATA.tensors[0].mean(0), atol=0.3)
    assert full.rows == 4 * 40

    pyro.clear_param_store()
    fit(dataset=DATA, step=MeanStep(), epochs=2, batch_size=8, progress=False, seed=1, out=tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["step_state"] == {"rows": 80}
    pyro.clear_param_store()
    resumed = MeanStep()
    again = fit(dataset=DATA, step=resumed, epochs=4, batch_size=8, progress=False, seed=1, out=tmp_path)
    assert torch.equal(pyro.param("mean").detach(), mean)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert resumed.rows == full.rows and drop(again) == drop(hist)


def test_step_protocol_checks():
    assert isinstance(MeanStep(), Step) and not isinstance(MeanStep(), TrainingStep)
    wrapped = as_training_step(MeanStep())
    assert isinstance(wrapped, TrainingStep) and wrapped.validate(DATA) is None
    with pytest.raises(TypeError, match="a training step needs a method step\\(batch, state\\)"):
        fit(dataset=DATA, step=object(), progress=False)
    vae = VAE(3, z_dim=1, hidden=(4,))
    with pytest.raises(ValueError, match="either model, guide and loss \\(an SVI step\\), or step="):
        fit(vae.model, vae.guide, DATA, Trace_ELBO(), step=MeanStep(), progress=False)
    with pytest.raises(ValueError, match="fit needs a dataset"):
        fit(step=MeanStep(), progress=False)


def test_train_state_round_trips_through_a_checkpoint():
    s = TrainState(epoch=2, batch=1, step=9, history=[{"epoch": 1}], best_val=-3.0, bad_epochs=1,
                   epoch_loss=4.5, epoch_seen=16, epoch_seconds=0.25)
    ckpt = s.to_checkpoint(params={})
    assert ckpt["format"] == 1 and TrainState.from_checkpoint(ckpt) == s
    s.end_epoch({"epoch": 3}, complete=False)
    assert (s.epoch, s.batch, s.epoch_seen) == (2, 1, 16)
    s.end_epoch({"epoch": 3}, complete=True)
    assert (s.epoch, s.batch, s.epoch_seen, len(s.history)) == (3, 0, 0, 3)
    assert s.improved(-1.0) and not s.improved(-2.0) and s.bad_epochs == 1


def test_one_process_strategy_is_the_identity():
    s = make_strategy(1, torch.device("cpu"))
    assert type(s) is Strategy and s.is_writer and s.gather_rng() == []
    assert s.combine({"loss": 2.5, "rows": 4.0}, True) == ({"loss": 2.5, "rows": 4.0}, True)
    assert s.broadcast_float(1.5) == 1.5
    assert isinstance(make_strategy(2, torch.device("cpu")), DataParallel)
    with pytest.raises(ValueError, match="check_sync_every must be >= 1; got 0"):
        Strategy(0)


def test_objectives_declare_their_state():
    assert isinstance(IWAE(2), Stateful) and isinstance(Compiled(IWAE(2)), Stateful)
    assert not isinstance(Trace_ELBO(), Stateful)
    got = []
    mcem = MCEM(num_steps=1)
    mcem.chains = {7: torch.ones(2), 3: torch.zeros(2)}
    mcem.merge_rows(lambda k, v: (got.append((k, v)) or (torch.cat([k, torch.tensor([5])]),
                                                          torch.cat([v, torch.full((1, 2), 2.0)]))))
    assert got[0][0].tolist() == [7, 3] and set(mcem.chains) == {7, 3, 5}
    assert torch.equal(mcem.chains[5], torch.full((2,), 2.0))


def test_with_kl_returns_a_new_objective():
    base = IWAE(3)
    scheduled = with_kl(base, KLSchedule(warmup=10))
    assert scheduled is not base and base.kl is None and scheduled.kl.warmup == 10
    assert isinstance(scheduled, Objective)


def test_the_trainer_passes_its_step_to_the_kl_schedule():
    vae = VAE(3, z_dim=1, hidden=(4,), likelihood="gaussian")
    loss = with_kl(IWAE(1), KLSchedule(warmup=5))
    step = SVIStep(vae.model, vae.guide, loss, pyro.optim.Adam({"lr": 1e-3}))
    step.step((DATA.tensors[0][:4],), TrainState(step=3))
    assert step.record()["kl_weight"] == pytest.approx(3 / 5)
    assert math.isfinite(step.validate(TensorDataset(DATA.tensors[0][:4])))


def test_svi_step_records_compile_time_of_a_compiled_pyro_objective():
    """Compiled(Trace_ELBO): a Pyro objective, without a KL schedule, inside the wrapper."""
    vae = VAE(3, z_dim=1, hidden=(4,), likelihood="gaussian")
    hist = fit(vae.model, vae.guide, DATA, Trace_ELBO(), epochs=1, batch_size=20, compile="fx",
               progress=False)
    assert hist[-1]["compile_seconds"] >= 0 and "kl_weight" not in hist[-1]
