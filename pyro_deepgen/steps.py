"""The step protocol that :func:`pyro_deepgen.train.fit` drives, and its SVI step.

A *training step* is anything with ``step(batch, state) -> dict of floats``: it
takes one batch (the model's arguments, already on the device) and the
:class:`~pyro_deepgen.checkpoints.TrainState`, updates its parameters, and returns
figures, among them ``"loss"`` (summed over the batch) and ``"rows"``. ``fit`` owns
the loop, the step count, checkpoints and resumption; the step owns its model,
optimizers and objectives. :class:`SVIStep` (``SVI`` with an objective) is one; an
adversarial step with two players or a contrastive-divergence step are others.

A step may also implement the optional parts of :class:`TrainingStep`
(``setup``, ``get_state``/``set_state``, ``merge_rows``, ``validate``,
``record``); ``fit`` gives a step that has only ``step`` the defaults
(:func:`as_training_step`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, SVI
from torch.utils.data import Dataset

from pyro_deepgen.checkpoints import TrainState, load_params, params
from pyro_deepgen.distributed import Strategy
from pyro_deepgen.evaluate import elbo as evaluate_elbo
from pyro_deepgen.evaluate.batches import model_args
from pyro_deepgen.infer import Compiled, Objective, Stateful

__all__ = ["Batch", "SVIStep", "Step", "TrainingStep", "as_training_step"]

#: one batch: the positional arguments of the model
Batch = tuple


@runtime_checkable
class Step(Protocol):
    """The step protocol: one optimizer step on ``batch``; returns figures, at least
    ``"loss"`` (summed over the batch's rows) and ``"rows"``."""

    def step(self, batch: Batch, state: TrainState) -> dict[str, float]: ...


class TrainingStep:
    """The optional parts of the step protocol, with their defaults. Subclass it,
    or give ``fit`` any :class:`Step` (it is wrapped with these defaults)."""

    #: set by ``fit`` before anything else: how the processes work together
    strategy: Strategy = Strategy()

    def step(self, batch: Batch, state: TrainState) -> dict[str, float]:
        raise NotImplementedError

    def plan(self, dataset: Dataset, epochs: int, steps_per_epoch: int) -> None:
        """Checks, before anything runs, that the data and the run's length suit the step."""

    def setup(self, batch: Batch) -> None:
        """Creates every parameter from a first ``batch``, so that a checkpoint can
        be loaded into them, or rank 0's values broadcast."""

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the step (parameters, optimizer, running state)."""
        return {"params": params()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`get_state` returned."""
        load_params(state["params"])

    def merge_rows(self) -> None:
        """Exchanges per-datapoint state between processes (at epoch ends and checkpoints)."""

    def validate(self, dataset: Dataset) -> float | None:
        """A validation figure to maximize (early stopping, ``best.pt``), or ``None``."""
        return None

    def record(self) -> dict[str, float]:
        """Extra entries for an epoch's record."""
        return {}


class _Wrapped(TrainingStep):
    """A bare :class:`Step` with the defaults (and its own state, if it is :class:`Stateful`,
    kept in checkpoints as ``step_state``)."""

    def __init__(self, inner: Step):
        self.inner = inner

    def step(self, batch: Batch, state: TrainState) -> dict[str, float]:
        return self.inner.step(batch, state)

    def get_state(self) -> dict[str, Any]:
        own = self.inner.get_state() if isinstance(self.inner, Stateful) else {}
        return {**super().get_state(), "step_state": own}

    def set_state(self, state: dict[str, Any]) -> None:
        # a bare step creates its parameters as it runs: those not there yet are created here,
        # unconstrained (a step with constrained parameters creates them in TrainingStep.setup)
        store = pyro.get_param_store()
        for name, value in state["params"].items():
            if name not in store:
                pyro.param(name, value.clone())
        super().set_state(state)
        if isinstance(self.inner, Stateful):
            self.inner.set_state(state.get("step_state", {}))


def as_training_step(step: Step) -> TrainingStep:
    """``step`` itself if it is a :class:`TrainingStep`, else wrapped with the defaults."""
    if isinstance(step, TrainingStep):
        return step
    if not isinstance(step, Step):
        raise TypeError(f"a training step needs a method step(batch, state) -> dict of floats; got "
                        f"{type(step).__name__}")
    return _Wrapped(step)


class _NoState:
    """The :class:`Stateful` protocol for objectives that keep no running state."""

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        pass

    def sync_state(self, reduce_sum: Callable) -> None:
        pass

    def merge_rows(self, exchange: Callable) -> None:
        pass


class SVIStep(TrainingStep):
    """``SVI(model, guide, optim, loss)`` as a training step: one gradient step of
    ``loss`` on the batch, the gradients combined over processes (``strategy``)
    before the optimizer, the objective's running state synchronized after.

    :param compile: run ``loss`` as a compiled static program
        (:class:`~pyro_deepgen.infer.Compiled`): ``True``/``"inductor"``, ``"fx"`` or ``False``.
    :param labelled: semi-supervised training: a dataset of ``(x, y)`` cycled
        alongside the data; every step then adds the loss of ``labelled_batch_size``
        (default ``min(default_labelled, len(labelled))``) labelled rows,
        ``model(x, y)``, from a fresh permutation drawn from ``seed`` each time the
        set is used up (so that a resumed run draws what an uninterrupted one would).
    :param pass_labels: ``model(x, y)`` on the data's labels (validation too).
    :param val_num_samples: particles of the validation ELBO.

    Example:
        >>> from pyro.infer import Trace_ELBO
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=8, z_dim=2, hidden=(4,))
        >>> s = SVIStep(vae.model, vae.guide, Trace_ELBO(), pyro.optim.Adam({"lr": 1e-3}))
        >>> sorted(s.step((torch.zeros(3, 8),), TrainState()))
        ['loss', 'rows']
    """

    def __init__(self, model: Callable, guide: Callable, loss: ELBO, optim: pyro.optim.PyroOptim, *,
                 compile: bool | str = False, labelled: Dataset | None = None,
                 labelled_batch_size: int | None = None, default_labelled: int = 128, seed: int = 0,
                 pass_labels: bool = False, val_num_samples: int = 1,
                 device: torch.device | str = "cpu"):
        if compile:
            loss = Compiled(loss, backend="inductor" if compile is True else compile)
        self.model, self.guide, self.loss, self.optim = model, guide, loss, optim
        self.svi = SVI(model, guide, optim, loss)
        self.state_of_loss = loss if isinstance(loss, Stateful) else _NoState()
        self.pass_labels, self.val_num_samples = pass_labels, val_num_samples
        self.device = torch.device(device)
        self.labelled = labelled
        self.labelled_rows = _labelled_rows(labelled, labelled_batch_size, default_labelled, seed)

    def plan(self, dataset: Dataset, epochs: int, steps_per_epoch: int) -> None:
        kl = self._kl_schedule()
        if kl is not None and kl.warmup > epochs * steps_per_epoch:
            raise ValueError(
                f"the KL warm-up of {kl.warmup} steps does not fit in the run: {epochs} epochs of "
                f"{steps_per_epoch} steps make {epochs * steps_per_epoch} steps")
        if self.labelled is not None:
            first = self.labelled[torch.arange(1)]
            x_u = dataset[torch.arange(1)]
            x_u = x_u[0] if isinstance(x_u, (tuple, list)) else x_u
            if tuple(first[0].shape[1:]) != tuple(x_u.shape[1:]):
                raise ValueError(f"labelled and unlabelled data differ in their features: labelled rows "
                                 f"have shape {tuple(first[0].shape[1:])}, unlabelled rows "
                                 f"{tuple(x_u.shape[1:])}")

    def setup(self, batch: Batch) -> None:
        with poutine.block(), torch.no_grad():  # create the params (to overwrite or to broadcast)
            poutine.trace(self.guide).get_trace(*batch)
            model_trace = poutine.trace(self.model).get_trace(*batch)
            if isinstance(self.loss, (Objective, Compiled)):
                self.loss.init_params(self.model, self.guide, *batch)
        self.strategy.reduction_for(model_trace)

    def step(self, batch: Batch, state: TrainState) -> dict[str, float]:
        if isinstance(self.loss, (Objective, Compiled)):
            self.loss.set_step(state.step)
        batches = [batch]
        rows = len(batch[0])
        if self.labelled_rows is not None:
            s = self.strategy
            lidx = self.labelled_rows(state.step).tensor_split(s.world)[s.rank]
            batches.append(model_args(self.labelled[lidx], True, self.device))
            rows += len(lidx)
        with poutine.trace(param_only=True) as capture:
            value = sum(float(self.svi.loss_and_grads(self.model, self.guide, *args)) for args in batches)
        params = set(site["value"].unconstrained() for site in capture.trace.nodes.values())
        self.strategy.reduce_gradients(params)
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        self.strategy.sync_state(self.state_of_loss)
        return {"loss": value, "rows": float(rows)}

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "optim": self.optim.get_state(),
                "loss_state": self.state_of_loss.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if state.get("loss_state"):
            self.state_of_loss.set_state(state["loss_state"])
        self.optim.set_state(state["optim"])

    def merge_rows(self) -> None:
        self.strategy.merge_rows(self.state_of_loss)

    def validate(self, dataset: Dataset) -> float:
        """The validation ELBO per datapoint (``val_num_samples`` particles)."""
        return evaluate_elbo(self.model, self.guide, dataset, num_samples=self.val_num_samples,
                             pass_labels=self.pass_labels, device=self.device).mean().item()

    def record(self) -> dict[str, float]:
        out = {}
        if isinstance(self.loss, Compiled):
            out["compile_seconds"] = self.loss.compile_seconds
        kl = self._kl_schedule()
        if kl is not None:  # at the last step taken
            out["kl_weight"] = kl.factor(max(self._objective().kl_step - 1, 0))
        return out

    def _objective(self) -> ELBO:
        """The objective itself (inside a :class:`~pyro_deepgen.infer.Compiled`)."""
        return self.loss.objective if isinstance(self.loss, Compiled) else self.loss

    def _kl_schedule(self):
        objective = self._objective()
        return objective.kl if isinstance(objective, Objective) else None


def _labelled_rows(labelled: Dataset | None, batch_size: int | None, default: int,
                   seed: int) -> Callable[[int], torch.Tensor] | None:
    """Checks the labelled set and returns ``step -> row indices``: step ``s``
    takes rows ``s*b .. (s+1)*b - 1`` of the endless concatenation of
    permutations of the labelled set, the ``j``-th drawn from ``(seed, j)``."""
    if labelled is None:
        if batch_size is not None:
            raise ValueError("labelled_batch_size needs a labelled dataset")
        return None
    n = len(labelled)
    if n == 0:
        raise ValueError("the labelled dataset is empty")
    first = labelled[torch.arange(1)]
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise ValueError("the labelled dataset must yield (x, y) pairs")
    b = min(default, n) if batch_size is None else batch_size
    if b < 1:
        raise ValueError(f"labelled_batch_size must be >= 1; got {b}")
    perms: dict[int, torch.Tensor] = {}

    def perm(j: int) -> torch.Tensor:
        if j not in perms:
            perms.clear()  # keep one or two
            perms[j] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + j))
        return perms[j]

    def rows(step: int) -> torch.Tensor:
        out, pos = [], step * b
        while pos < (step + 1) * b:
            j, off = divmod(pos, n)
            take = min((step + 1) * b - pos, n - off)
            out.append(perm(j)[off:off + take])
            pos += take
        return torch.cat(out)

    return rows

