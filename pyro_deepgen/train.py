"""``fit``: the one training loop, for every model/guide pair and every training step."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pyro
import torch
from pyro.infer import ELBO
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from pyro_deepgen.checkpoints import (BEST, CHECKPOINT, HISTORY, TrainState, atomic_save, load_checkpoint,
                                      load_params, params, rng_state, set_rng_state, write_history)
from pyro_deepgen.distributed import Strategy, init_distributed, local_device, make_strategy
from pyro_deepgen.evaluate.batches import model_args
from pyro_deepgen.steps import SVIStep, Step, TrainingStep, as_training_step

__all__ = ["fit", "default_optim", "load_checkpoint", "CHECKPOINT", "BEST", "HISTORY"]

logger = logging.getLogger(__name__)


def default_optim(lr: float = 1e-3) -> pyro.optim.PyroOptim:
    """``fit``'s optimizer: Pyro's Adam with PyTorch's fused kernel (``fused=True``:
    one kernel per parameter tensor instead of a dozen small ops; the same update).
    On the 784-400-50 VAE it takes 0.4 ms per step where the unfused one takes 2.5 ms
    (docs/benchmarks.md, "Speed: compiled objectives")."""
    return pyro.optim.Adam({"lr": lr, "fused": True})


def _module_of(fn: Callable) -> torch.nn.Module | None:
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def fit(
    model: Callable | None = None,
    guide: Callable | None = None,
    dataset: Dataset | None = None,
    loss: ELBO | None = None,
    *,
    step: Step | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optim: pyro.optim.PyroOptim | None = None,
    val_dataset: Dataset | None = None,
    val_num_samples: int = 1,
    patience: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    checkpoint_every: int | None = None,
    max_time: float | None = None,
    device: str | torch.device = "cpu",
    pass_labels: bool = False,
    drop_last: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callable[[dict], None]] = (),
    labelled: Dataset | None = None,
    labelled_batch_size: int | None = None,
    backend: str = "auto",
    check_sync_every: int | None = None,
    compile: bool | str = False,
) -> list[dict]:
    """Trains by a training step over ``dataset`` and returns the per-epoch history:
    by default ``SVI(model, guide, optim, loss)`` (:class:`~pyro_deepgen.steps.SVIStep`),
    or any ``step`` with the step protocol (:mod:`pyro_deepgen.steps`), such as an
    adversarial or a contrastive-divergence step.

    The loop runs over an explicit :class:`~pyro_deepgen.checkpoints.TrainState`.
    Each epoch visits ``dataset`` in a fresh permutation drawn from ``seed`` and the
    epoch number (``DistributedSampler``'s scheme), in batches of ``batch_size``;
    ``model(x)`` or, with ``pass_labels``, ``model(x, y)``.

    With ``out``, writes ``checkpoint.pt`` at every epoch end (and every
    ``checkpoint_every`` steps), ``history.json``/``history.csv`` at every
    epoch end, and ``best.pt`` (the best validation figure's parameters), all
    atomically. With ``resume``, an existing checkpoint is continued: the
    result is bit-identical to an uninterrupted run.

    :param val_dataset: when given, the step's validation figure (the ELBO with
        ``val_num_samples`` particles for SVI) is recorded every epoch as
        ``val_elbo``; with ``patience``, training stops after that many epochs
        without improvement and the best parameters are restored.
    :param optim: default :func:`default_optim` with ``lr``.
    :param max_time: stop after this many seconds of training (a budget).
        With a KL schedule on ``loss`` (:func:`~pyro_deepgen.infer.with_kl`), the
        history records its factor (``kl_weight``), ``train_loss`` is the
        modified objective's and ``val_elbo`` the plain ELBO.
    :param callbacks: called with each epoch's history record (before it is
        written, so a callback may add entries to it, e.g. a test error).
    :param labelled: semi-supervised training: a dataset of ``(x, y)`` cycled
        alongside ``dataset`` (see :class:`~pyro_deepgen.steps.SVIStep`): every
        step adds the loss of ``labelled_batch_size`` (default ``min(batch_size,
        len(labelled))``) labelled rows, ``model(x, y)``; ``train_loss`` is per row
        of both. An epoch is one pass over ``dataset``.
    :param backend: data-parallel training under ``torchrun`` (see
        :mod:`pyro_deepgen.distributed`): ``"auto"`` (NCCL on CUDA, gloo on
        CPU), ``"gloo"`` or ``"nccl"``. Each of the N processes reads its shard
        of every global batch of ``batch_size`` rows (``DistributedSampler``
        with ``seed``), the gradients of all Pyro parameters are combined before
        each optimizer step, and only rank 0 writes files and shows progress.
        ``batch_size`` must be a multiple of N. A checkpoint resumes with any N.
    :param check_sync_every: (debugging data-parallel runs) compare checksums
        of the parameters across processes every this many steps.
    :param compile: run ``loss`` as a compiled static program
        (:class:`~pyro_deepgen.infer.Compiled`): ``True`` or ``"inductor"``
        (``torch.compile``), ``"fx"`` (the traced graph as it is), ``False``.
        Each epoch's record gets ``compile_seconds`` (cumulative tracing and
        compiling, also counted in ``seconds``).
    :raises FloatingPointError: on a NaN or infinite loss, naming the step;
        the last good checkpoint is left as it was.
    :raises ~pyro_deepgen.distributed.LostProcessError: when another process
        fails or stops answering (within the process group's timeout).
    """
    _check_arguments(dataset, epochs, batch_size, patience, val_dataset, device, step, loss)
    world = init_distributed(device, backend)
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is the global batch, split evenly over the {world} "
                         f"processes; it must be a multiple of {world} (e.g. "
                         f"{batch_size - batch_size % world or world})")
    device, local_batch = local_device(device), batch_size // world
    out_dir = Path(out) if out is not None else None
    path = out_dir / CHECKPOINT if out_dir is not None else None
    strategy = make_strategy(world, device, str(path) if path else None, check_sync_every)
    if step is None:
        step = _svi_step(model, guide, loss, optim or default_optim(lr), device, compile=compile,
                         labelled=labelled, labelled_batch_size=labelled_batch_size,
                         default_labelled=batch_size, seed=seed, pass_labels=pass_labels,
                         val_num_samples=val_num_samples)
    step = as_training_step(step)
    step.strategy = strategy
    if out_dir is not None and strategy.is_writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(seed)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=strategy.rank, shuffle=True, seed=seed)
    steps_per_epoch = _steps_per_epoch(len(sampler), local_batch, drop_last, batch_size, len(dataset))
    step.plan(dataset, epochs, steps_per_epoch)
    state, resuming = TrainState(), path is not None and resume and path.exists()
    if resuming or world > 1:
        step.setup(model_args(dataset[torch.arange(min(local_batch, len(dataset)))], pass_labels, device))
    if resuming:
        state = _resume(step, path, device, strategy, seed)
    elif strategy.rank > 0:
        pyro.set_rng_seed(_rank_seed(seed, strategy.rank, 0))
    strategy.broadcast_params()
    save = _checkpointer(path, step, strategy)
    best, stopped = None, patience is not None and state.bad_epochs >= patience
    t_start, out_of_time = time.perf_counter(), False
    bar = tqdm(total=epochs * steps_per_epoch, initial=min(state.step, epochs * steps_per_epoch),
               disable=not progress or not strategy.is_writer, unit="step", dynamic_ncols=True, leave=False)
    undo_signal = strategy.install_signal_handler()
    try:
        while state.epoch < epochs and not out_of_time and not stopped:
            sampler.set_epoch(state.epoch)
            perm, t_epoch = torch.as_tensor(list(sampler)), time.perf_counter()
            for b in range(state.batch, steps_per_epoch):
                idx = perm[b * local_batch:(b + 1) * local_batch]
                strategy.step = state.step + 1  # for messages: the step being computed
                figures = step.step(model_args(dataset[idx], pass_labels, device), state)
                over = max_time is not None and time.perf_counter() - t_start >= max_time
                figures, out_of_time = strategy.combine(figures, over)
                if not math.isfinite(figures["loss"]):
                    where = f" ({path} is left as it was)" if path is not None else ""
                    raise FloatingPointError(
                        f"loss is {figures['loss']} at step {state.step + 1} (epoch {state.epoch + 1}, "
                        f"batch {b + 1}); training stopped{where}")
                state.step, state.batch = state.step + 1, b + 1
                state.epoch_loss += figures["loss"]
                state.epoch_seen += int(figures["rows"])
                bar.update(1)
                if out_of_time:
                    break
                if checkpoint_every and state.step % checkpoint_every == 0 and b + 1 < steps_per_epoch:
                    state.epoch_seconds, t_epoch = state.epoch_seconds + time.perf_counter() - t_epoch, \
                        time.perf_counter()
                    save(state)
            step.merge_rows()  # every row's state, for the next epoch's shards
            state.epoch_seconds += time.perf_counter() - t_epoch
            record = {"epoch": state.epoch + 1, "step": state.step,
                      "train_loss": state.epoch_loss / max(state.epoch_seen, 1),
                      "seconds": state.epoch_seconds, "complete": not out_of_time, **step.record()}
            if val_dataset is not None:  # one process evaluates; the others wait for its figure
                val = step.validate(val_dataset) if strategy.is_writer else None
                record["val_elbo"] = val = strategy.broadcast_float(val)
                if state.improved(val):
                    best = params()
                    if out_dir is not None and strategy.is_writer:
                        atomic_save(best, out_dir / BEST)
            for cb in callbacks if strategy.is_writer else ():
                cb(record)
            bar.set_postfix(loss=f"{record['train_loss']:.2f}",
                            **({"val_elbo": f"{record['val_elbo']:.2f}"} if "val_elbo" in record else {}))
            state.end_epoch(record, complete=not out_of_time)
            if out_dir is not None:
                save(state, merged=True)
                if strategy.is_writer:
                    write_history(state.history, out_dir)
            if patience is not None and state.bad_epochs >= patience:
                logger.info("early stop at epoch %d: no improvement in %d epochs", state.epoch, patience)
                stopped = True
    finally:
        undo_signal()
        bar.close()
    if patience is not None and state.best_val > -math.inf:  # the best epoch may be before a resume
        load_params(best if best is not None else
                    torch.load(out_dir / BEST, map_location=device, weights_only=True))
    return state.history


def _check_arguments(dataset: Dataset | None, epochs: int, batch_size: int, patience: int | None,
                     val_dataset: Dataset | None, device: str | torch.device, step: Step | None,
                     loss: ELBO | None) -> None:
    if dataset is None:
        raise ValueError("fit needs a dataset")
    if (step is None) == (loss is None):
        raise ValueError("fit needs either model, guide and loss (an SVI step), or step=")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1; got {epochs}, {batch_size}")
    if patience is not None and val_dataset is None:
        raise ValueError("early stopping (patience) needs a val_dataset")
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but torch.cuda.is_available() is False")


def _svi_step(model: Callable, guide: Callable, loss: ELBO, optim: pyro.optim.PyroOptim,
              device: torch.device, **options: Any) -> SVIStep:
    """``fit``'s default step, with the model's and guide's modules on ``device``."""
    for fn in (model, guide):
        module = _module_of(fn)
        if module is not None:
            module.to(device)
    return SVIStep(model, guide, loss, optim, device=device, **options)


def _steps_per_epoch(n_local: int, local_batch: int, drop_last: bool, batch_size: int, n: int) -> int:
    """Batches per epoch of a process's ``n_local`` rows (``DistributedSampler`` repeats
    up to ``world - 1`` rows per epoch to give every process as many)."""
    steps = n_local // local_batch if drop_last else -(-n_local // local_batch)
    if steps == 0:
        raise ValueError(f"drop_last with batch_size={batch_size} > {n} datapoints leaves no batch")
    return steps


def _resume(step: TrainingStep, path: Path, device: torch.device, strategy: Strategy,
            seed: int) -> TrainState:
    """Loads the checkpoint at ``path`` into ``step`` and the random state; returns its state.
    Each process continues its own random stream, or starts one (a new process count)."""
    ckpt = load_checkpoint(path, map_location=device)
    step.set_state(ckpt)
    set_rng_state(ckpt["rng"])
    if strategy.rank > 0:
        saved = ckpt.get("rng_ranks", [])
        if strategy.rank < len(saved):
            torch.set_rng_state(saved[strategy.rank].cpu())
        else:
            pyro.set_rng_seed(_rank_seed(seed, strategy.rank, ckpt["step"]))
    state = TrainState.from_checkpoint(ckpt)
    logger.info("resumed from %s at epoch %d, batch %d (step %d)", path, state.epoch, state.batch, state.step)
    return state


def _checkpointer(path: Path | None, step: TrainingStep, strategy: Strategy) -> Callable[..., None]:
    """``save(state, merged=False)``: writes a checkpoint at ``path`` (nothing without one).
    Its collectives run on every process; rank 0 writes."""

    def save(state: TrainState, merged: bool = False) -> None:
        if path is None:
            return
        if not merged:
            step.merge_rows()
        rng_ranks = strategy.gather_rng()
        if strategy.is_writer:
            atomic_save(state.to_checkpoint(**step.get_state(), rng=rng_state(), rng_ranks=rng_ranks,
                                            world_size=strategy.world), path)

    return save


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of process ``rank``'s random stream from ``step`` on (rank 0 uses ``seed``)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2 ** 63)
