"""``fit``: the one training loop for every model/guide pair and objective."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, SVI
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from pyro_deepgen.distributed import DataParallel, init_distributed, local_device, rank
from pyro_deepgen.evaluate import elbo as evaluate_elbo
from pyro_deepgen.evaluate.batches import model_args
from pyro_deepgen.infer.compiled import Compiled

__all__ = ["fit", "default_optim", "load_checkpoint", "CHECKPOINT", "BEST", "HISTORY"]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
HISTORY = "history.json"
_FORMAT = 1


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _params() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}


def _load_params(params: dict[str, torch.Tensor]) -> None:
    store = dict(pyro.get_param_store().named_parameters())
    missing = sorted(set(params) - set(store))
    if missing:
        raise RuntimeError(f"checkpoint has parameters this model does not create: {missing}")
    with torch.no_grad():
        for name, value in params.items():
            store[name].copy_(value)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Reads a checkpoint written by :func:`fit` (``weights_only``: nothing is unpickled)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a pyro_deepgen checkpoint (format {ckpt.get('format')!r})")
    return ckpt


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
    model: Callable,
    guide: Callable,
    dataset: Dataset,
    loss: ELBO,
    *,
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
    """Trains ``model``/``guide`` with ``SVI(model, guide, optim, loss)`` and
    returns the per-epoch history.

    Each epoch visits ``dataset`` in a fresh permutation drawn from ``seed``
    and the epoch number (``DistributedSampler``'s scheme), in batches of
    ``batch_size``; ``model(x)`` or, with ``pass_labels``, ``model(x, y)``.

    With ``out``, writes ``checkpoint.pt`` at every epoch end (and every
    ``checkpoint_every`` steps), ``history.json``/``history.csv`` at every
    epoch end, and ``best.pt`` (the best validation ELBO's parameters), all
    atomically. With ``resume``, an existing checkpoint is continued: the
    result is bit-identical to an uninterrupted run.

    :param val_dataset: when given, the validation ELBO (``val_num_samples``
        particles) is recorded every epoch; with ``patience``, training stops
        after that many epochs without improvement and the best parameters are
        restored.
    :param optim: default :func:`default_optim` with ``lr``.
    :param max_time: stop after this many seconds of training (a budget).
        With a KL schedule on ``loss`` (:func:`~pyro_deepgen.infer.with_kl`), the
        history records its factor (``kl_weight``), ``train_loss`` is the
        modified objective's and ``val_elbo`` the plain ELBO.
    :param callbacks: called with each epoch's history record (before it is
        written, so a callback may add entries to it, e.g. a test error).
    :param labelled: semi-supervised training: a dataset of ``(x, y)`` cycled
        alongside ``dataset``. Every step then takes one gradient step on the
        sum of the loss of the unlabelled batch, ``model(x)``, and of a batch of
        ``labelled_batch_size`` (default ``min(batch_size, len(labelled))``)
        labelled rows, ``model(x, y)``; the labelled rows come from a fresh
        permutation (drawn from ``seed``) each time the set is used up, and
        ``train_loss`` is per row of both. An epoch is one pass over ``dataset``.
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
        Objectives or models that are not static run the general path, with one
        log line. Each epoch's record gets ``compile_seconds`` (cumulative
        tracing and compiling, also counted in ``seconds``).
    :raises FloatingPointError: on a NaN or infinite loss, naming the step;
        the last good checkpoint is left as it was.
    :raises ~pyro_deepgen.distributed.LostProcessError: when another process
        fails or stops answering (within the process group's timeout).
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1; got {epochs}, {batch_size}")
    if patience is not None and val_dataset is None:
        raise ValueError("early stopping (patience) needs a val_dataset")
    n = len(dataset)
    if n == 0:
        raise ValueError("the training dataset is empty")
    labelled_rows = _labelled_rows(dataset, labelled, labelled_batch_size, batch_size, seed)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but torch.cuda.is_available() is False")
    if check_sync_every is not None and check_sync_every < 1:
        raise ValueError(f"check_sync_every must be >= 1; got {check_sync_every}")
    world = init_distributed(device, backend)
    device, me = local_device(device), rank()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is the global batch, split evenly over the {world} "
                         f"processes; it must be a multiple of {world} (e.g. "
                         f"{batch_size - batch_size % world or world})")
    local_batch = batch_size // world
    for fn in (model, guide):
        module = _module_of(fn)
        if module is not None:
            module.to(device)

    if compile:
        loss = Compiled(loss, backend="inductor" if compile is True else compile)
    optim = optim if optim is not None else default_optim(lr)
    svi = SVI(model, guide, optim, loss)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and me == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    pyro.set_rng_seed(seed)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=me, shuffle=True, seed=seed)
    n_local = len(sampler)  # ceil(n / world): the sampler repeats up to world - 1 rows per epoch
    steps_per_epoch = n_local // local_batch if drop_last else -(-n_local // local_batch)
    if steps_per_epoch == 0:
        raise ValueError(f"drop_last with batch_size={batch_size} > {n} datapoints leaves no batch")

    kl = getattr(loss, "kl", None)
    if kl is not None and kl.warmup > epochs * steps_per_epoch:
        raise ValueError(
            f"the KL warm-up of {kl.warmup} steps does not fit in the run: {epochs} epochs of "
            f"{steps_per_epoch} steps make {epochs * steps_per_epoch} steps")

    history: list[dict] = []
    epoch, start_batch, step = 0, 0, 0
    best_val, bad_epochs, epoch_loss, epoch_seen, epoch_seconds = -math.inf, 0, 0.0, 0, 0.0
    ckpt_path = out_dir / CHECKPOINT if out_dir is not None else None
    dp = DataParallel(device, str(ckpt_path) if ckpt_path is not None else None) if world > 1 else None
    first = torch.arange(min(local_batch, n))
    resuming = ckpt_path is not None and resume and ckpt_path.exists()
    if resuming or dp is not None:
        with poutine.block(), torch.no_grad():  # create the params (to overwrite or to broadcast)
            args = model_args(dataset[first], pass_labels, device)
            poutine.trace(guide).get_trace(*args)
            model_trace = poutine.trace(model).get_trace(*args)
            if hasattr(loss, "init_params"):
                loss.init_params(model, guide, *args)
    if resuming:
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        _load_params(ckpt["params"])
        if hasattr(loss, "set_state") and ckpt.get("loss_state"):
            loss.set_state(ckpt["loss_state"])
        optim.set_state(ckpt["optim"])
        _set_rng_state(ckpt["rng"])
        if me > 0:  # each process continues its own random stream, or starts one
            saved = ckpt.get("rng_ranks", [])
            if me < len(saved):
                torch.set_rng_state(saved[me].cpu())
            else:
                pyro.set_rng_seed(_rank_seed(seed, me, ckpt["step"]))
        history = list(ckpt["history"])
        epoch, start_batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        best_val, bad_epochs = ckpt["best_val"], ckpt["bad_epochs"]
        epoch_loss, epoch_seen, epoch_seconds = ckpt["epoch_loss"], ckpt["epoch_seen"], ckpt["epoch_seconds"]
        logger.info("resumed from %s at epoch %d, batch %d (step %d)", ckpt_path, epoch, start_batch, step)
    elif me > 0:
        pyro.set_rng_seed(_rank_seed(seed, me, 0))
    if dp is not None:
        dp.broadcast_params()
        dp.step = step
        how = dp.reduction_for(model_trace)
        if me == 0:
            logger.info("data-parallel: %d processes, %d rows each per step; gradients: %s over "
                        "processes", world, local_batch, how)

    def save_checkpoint(e: int, b: int, merged: bool = False) -> None:
        if ckpt_path is None:
            return
        rng_ranks = []
        if dp is not None:  # collectives: every process takes part, rank 0 writes
            if not merged:
                dp.merge_chains(loss)
            rng_ranks = dp.gather_rng()
            if me != 0:
                return
        _atomic_save({
            "format": _FORMAT, "epoch": e, "batch": b, "step": step,
            "params": _params(), "optim": optim.get_state(), "rng": _rng_state(),
            "rng_ranks": rng_ranks, "world_size": world,
            "loss_state": loss.get_state() if hasattr(loss, "get_state") else {},
            "history": history, "best_val": best_val, "bad_epochs": bad_epochs,
            "epoch_loss": epoch_loss, "epoch_seen": epoch_seen, "epoch_seconds": epoch_seconds,
        }, ckpt_path)

    best_params: dict[str, torch.Tensor] | None = None
    t_start = time.perf_counter()
    out_of_time = False
    bar = tqdm(total=epochs * steps_per_epoch, initial=min(step, epochs * steps_per_epoch),
               disable=not progress or me != 0, unit="step", dynamic_ncols=True, leave=False)
    stopped = patience is not None and bad_epochs >= patience  # a resumed run that stopped early
    undo_signal = dp.install_signal_handler() if dp is not None else (lambda: None)
    try:
        while epoch < epochs and not out_of_time and not stopped:
            sampler.set_epoch(epoch)
            perm = torch.as_tensor(list(sampler))
            t_epoch = time.perf_counter()
            for b in range(start_batch, steps_per_epoch):
                idx = perm[b * local_batch:(b + 1) * local_batch]
                batches = [model_args(dataset[idx], pass_labels, device)]
                rows = len(idx)
                if labelled_rows is not None:
                    lidx = labelled_rows(step).tensor_split(world)[me]
                    batches.append(model_args(labelled[lidx], True, device))
                    rows += len(lidx)
                if dp is not None:
                    dp.step = step + 1  # for messages: the step being computed
                value, params = _loss_and_grads(svi, batches)
                over = max_time is not None and time.perf_counter() - t_start >= max_time
                if dp is not None:
                    value, rows, over = dp.after_step(value, rows, over, params)
                svi.optim(params)
                pyro.infer.util.zero_grads(params)
                if dp is not None:
                    dp.sync_state(loss)
                    if check_sync_every and dp.step % check_sync_every == 0:
                        dp.check_in_sync()
                if not math.isfinite(value):
                    where = f" ({ckpt_path} is left as it was)" if ckpt_path is not None else ""
                    raise FloatingPointError(
                        f"loss is {value} at step {step + 1} (epoch {epoch + 1}, batch {b + 1}); "
                        f"training stopped{where}")
                step += 1
                epoch_loss += value
                epoch_seen += rows
                bar.update(1)
                if over:
                    out_of_time = True
                    start_batch = b + 1
                    break
                if checkpoint_every and step % checkpoint_every == 0 and b + 1 < steps_per_epoch:
                    epoch_seconds += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    save_checkpoint(epoch, b + 1)
            else:
                start_batch = 0
            if dp is not None:  # every row's chain, for the next epoch's shards
                dp.merge_chains(loss)
            epoch_seconds += time.perf_counter() - t_epoch
            record = {"epoch": epoch + 1, "step": step,
                      "train_loss": epoch_loss / max(epoch_seen, 1),
                      "seconds": epoch_seconds, "complete": not out_of_time}
            if compile:
                record["compile_seconds"] = loss.compile_seconds
            if kl is not None:
                record["kl_weight"] = kl.factor(max(loss.kl_step - 1, 0))  # at the epoch's last step
            if val_dataset is not None:
                val = None
                if me == 0:  # one process evaluates; the others wait for its figure
                    val = evaluate_elbo(model, guide, val_dataset, num_samples=val_num_samples,
                                        pass_labels=pass_labels, device=device).mean().item()
                if dp is not None:
                    val = dp.broadcast_float(val)
                record["val_elbo"] = val
                if val > best_val:
                    best_val, bad_epochs = val, 0
                    if out_dir is not None and me == 0:
                        _atomic_save(_params(), out_dir / BEST)
                    best_params = _params()
                else:
                    bad_epochs += 1
            history.append(record)
            if me == 0:
                for cb in callbacks:
                    cb(record)
            bar.set_postfix(loss=f"{record['train_loss']:.2f}",
                            **({"val_elbo": f"{record['val_elbo']:.2f}"} if "val_elbo" in record else {}))
            if not out_of_time:
                epoch += 1
                epoch_loss, epoch_seen, epoch_seconds = 0.0, 0, 0.0
            if out_dir is not None:
                save_checkpoint(epoch, start_batch, merged=True)
                if me == 0:
                    _write_history(history, out_dir)
            if patience is not None and bad_epochs >= patience:
                logger.info("early stop at epoch %d: no improvement in %d epochs", epoch, patience)
                stopped = True
    finally:
        undo_signal()
        bar.close()
    if patience is not None and best_val > -math.inf:
        if best_params is None:  # the best epoch was before a resume
            best_params = torch.load(out_dir / BEST, map_location=device, weights_only=True)
        _load_params(best_params)
    return history


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of process ``rank``'s random stream from ``step`` on (rank 0 uses ``seed``)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2 ** 63)


def _loss_and_grads(svi: SVI, batches: Sequence[tuple]) -> tuple[float, set[torch.Tensor]]:
    """What ``svi.step`` does before the optimizer: the gradients of the summed
    loss of ``batches`` (one, or an unlabelled and a labelled one) accumulate in
    the parameters they reach; returns the loss and those parameters."""
    with poutine.trace(param_only=True) as capture:
        value = sum(float(svi.loss_and_grads(svi.model, svi.guide, *args)) for args in batches)
    return value, set(site["value"].unconstrained() for site in capture.trace.nodes.values())


def _labelled_rows(dataset: Dataset, labelled: Dataset | None, batch_size: int | None,
                   default: int, seed: int) -> Callable[[int], torch.Tensor] | None:
    """Checks the labelled set and returns ``step -> row indices``: step ``s``
    takes rows ``s*b .. (s+1)*b - 1`` of the endless concatenation of
    permutations of the labelled set, the ``j``-th drawn from ``(seed, j)``, so
    that a resumed run draws what an uninterrupted one would."""
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
    x_u = dataset[torch.arange(1)]
    x_u = x_u[0] if isinstance(x_u, (tuple, list)) else x_u
    if tuple(first[0].shape[1:]) != tuple(x_u.shape[1:]):
        raise ValueError(f"labelled and unlabelled data differ in their features: labelled rows have "
                         f"shape {tuple(first[0].shape[1:])}, unlabelled rows {tuple(x_u.shape[1:])}")
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


def _write_history(history: list[dict], out_dir: Path) -> None:
    _atomic_text(json.dumps(history, indent=1), out_dir / HISTORY)
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    tmp = out_dir / f"history.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, out_dir / "history.csv")
