"""Data-parallel training on ``torch.distributed``, for :func:`~pyro_deepgen.train.fit`.

Processes are started by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
joins them into one process group (gloo on CPU, NCCL on CUDA). Every process
runs the same ``fit``: it reads its shard of each global batch, computes its
gradients, and :class:`DataParallel` combines them before the optimizer step,
so that the parameters stay identical everywhere.

A batch's loss is a sum over its rows (``pyro.plate("data", len(x))``), so the
one-process gradient of a batch is the *sum* of the processes' gradients on
its shards. A model whose data plate is subsampled (``pyro.plate("data",
size=N, subsample=...)``) scales its loss to the whole data set on each
process; its gradients are averaged instead. :meth:`DataParallel.reduction_for`
tells the two apart from the plate.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import signal
from typing import Any, Callable, Iterable

import pyro
import torch
import torch.distributed as dist

from pyro_deepgen.infer.objective import Stateful

__all__ = ["BACKENDS", "DataParallel", "LostProcessError", "Strategy", "init_distributed",
           "launched_world_size", "local_device", "make_strategy", "rank", "shutdown", "world_size"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
#: seconds a collective waits for the other processes before it fails (``PYRO_DEEPGEN_DIST_TIMEOUT``)
DEFAULT_TIMEOUT = 300.0


class LostProcessError(RuntimeError):
    """Another process of the group failed or stopped answering."""


def launched_world_size() -> int:
    """The world size that the launcher (``torchrun``) asks for: ``$WORLD_SIZE``, else 1."""
    return _env_world()


def shutdown() -> None:
    """Leaves the process group, if this process joined one, after the others
    reach this point too: a process that left early would close connections that
    the others' communication threads still use."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # another process failed: leave anyway
            pass
        dist.destroy_process_group()


def _env_world() -> int:
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer; got {text!r}") from None
    if n < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1; got {n}")
    return n


def world_size() -> int:
    """The number of processes training together (1 outside ``torchrun``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_device(device: str | torch.device) -> torch.device:
    """``device``, with a bare ``"cuda"`` pinned to this process's GPU (``LOCAL_RANK``)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and _env_world() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_distributed(device: str | torch.device = "cpu", backend: str = "auto",
                     timeout: float | None = None) -> int:
    """Joins the process group that ``torchrun`` describes in the environment,
    once; returns the world size (1, and nothing is done, outside ``torchrun``).
    The group is left at exit (:func:`shutdown`), or earlier by calling it.

    :param backend: ``"auto"`` (NCCL for a CUDA device, gloo otherwise),
        ``"gloo"`` or ``"nccl"``.
    :param timeout: seconds a collective waits for the others before failing;
        default ``$PYRO_DEEPGEN_DIST_TIMEOUT`` or 300.
    :raises RuntimeError: NCCL without CUDA, or NCCL for a CPU device.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("backend 'nccl' needs CUDA GPUs, but torch.cuda.is_available() is False "
                           "on this machine; use --backend gloo (or auto) to train on CPUs")
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError(f"backend 'nccl' moves tensors between GPUs, but the device is {device}; "
                           "use --device cuda, or --backend gloo for CPU training")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    n = _env_world()
    if n == 1:
        return 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={n} but {', '.join(missing)} not set: start the processes "
                           "with torchrun (see docs: Training on several processes and machines)")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if timeout is None:
        timeout = float(os.environ.get("PYRO_DEEPGEN_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    atexit.register(shutdown)  # an orderly teardown when a script ends without one
    logger.info("rank %d of %d joined the process group (%s)", dist.get_rank(), n, backend)
    return n


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def _unflat(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, pos = [], 0
    for t in like:
        out.append(flat[pos:pos + t.numel()].view_as(t))
        pos += t.numel()
    return out


class Strategy:
    """How the processes of one :func:`~pyro_deepgen.train.fit` work together. This
    base class is one process alone (every method does nothing, or is the
    identity); :class:`DataParallel` is the data-parallel one. ``fit`` and the
    training steps call these methods and never branch on the number of processes.

    :param check_sync_every: (debugging) compare checksums of the parameters across
        processes every this many steps.
    """

    world, rank = 1, 0

    def __init__(self, check_sync_every: int | None = None):
        if check_sync_every is not None and check_sync_every < 1:
            raise ValueError(f"check_sync_every must be >= 1; got {check_sync_every}")
        self.check_sync_every = check_sync_every
        #: the step being computed, for messages
        self.step = 0

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    def reduction_for(self, model_trace) -> str:
        """How the processes' losses and gradients combine for this model (see
        :class:`DataParallel`); ``"sum"`` in one process."""
        return "sum"

    def broadcast_params(self) -> None:
        """Gives every process rank 0's parameters."""

    def reduce_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Combines the gradients of ``params`` over the processes, before the optimizer step."""

    def combine(self, metrics: dict[str, float], stop: bool) -> tuple[dict[str, float], bool]:
        """A step's figures over all processes (``"loss"`` as the gradients combine,
        the rest summed), and whether any process voted to stop."""
        return metrics, stop

    def sync_state(self, objective: Stateful) -> None:
        """Makes ``objective``'s running state the same on every process."""
        objective.sync_state(lambda values: list(values))

    def merge_rows(self, objective: Stateful) -> None:
        """Gives every process every row's per-datapoint state of ``objective``."""
        objective.merge_rows(lambda keys, values: (keys, values))

    def broadcast_float(self, value: float | None) -> float:
        """Rank 0's ``value`` on every process."""
        return float(value)

    def gather_rng(self) -> list[torch.Tensor]:
        """Every process's CPU random state (empty for one process, whose state is saved whole)."""
        return []

    def install_signal_handler(self) -> Callable[[], None]:
        """Handles the launcher's signals; returns the undo."""
        return lambda: None

    def shutdown(self) -> None:
        """Leaves the process group (see :func:`shutdown`)."""


class DataParallel(Strategy):
    """Data-parallel training: every method is a collective (all processes call
    it at the same point); failures of another process surface as
    :class:`LostProcessError`.

    A batch's loss is a sum over its rows, so the one-process gradient of a batch is
    the *sum* of the processes' gradients on their shards; a model whose data plate
    is subsampled scales its loss to the whole data set on each process, and its
    gradients and losses are averaged instead (:meth:`reduction_for`).
    """

    def __init__(self, device: torch.device, checkpoint: str | None = None,
                 check_sync_every: int | None = None):
        super().__init__(check_sync_every)
        self.world, self.rank = world_size(), rank()
        self.device = device
        self.where = f" The last checkpoint ({checkpoint}) is intact: run the same command to resume." \
            if checkpoint else ""
        self.reduce = "sum"
        self._known: set[str] = set()

    # -- failures ---------------------------------------------------------
    def _collective(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LostProcessError:
            raise
        except RuntimeError as e:  # gloo: "Connection closed by peer", timeouts; NCCL errors
            raise LostProcessError(
                f"rank {self.rank}: lost contact with the other processes at step {self.step} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}). Another process "
                f"failed or stopped answering; this one stops too.{self.where}") from e

    def install_signal_handler(self) -> Callable[[], None]:
        """Turns the launcher's SIGTERM (torchrun stops the others when one
        process fails) into a :class:`LostProcessError`; returns the undo."""
        try:
            previous = signal.getsignal(signal.SIGTERM)

            def handler(signum, frame):
                raise LostProcessError(
                    f"rank {self.rank}: stopped by SIGTERM at step {self.step}: the launcher stops "
                    f"every process when one fails (see the first failure in its report).{self.where}")

            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            return lambda: None
        return lambda: signal.signal(signal.SIGTERM, previous)

    def shutdown(self) -> None:
        shutdown()

    # -- parameters -------------------------------------------------------
    @staticmethod
    def named_params() -> list[tuple[str, torch.Tensor]]:
        store = pyro.get_param_store()
        return sorted((n, store.get_param(n).unconstrained()) for n in store.keys())

    def _structure(self, names: list[str]) -> list[float]:
        return [float(len(names)), float(sum(hash_name(n) for n in names) % (2 ** 40))]

    def _verify(self, mine: list[float], summed: list[float], what: str) -> None:
        if any(abs(s - self.world * m) > 0.5 for m, s in zip(mine, summed)):
            raise RuntimeError(f"rank {self.rank}: the processes hold different {what} at step "
                               f"{self.step}; data-parallel training needs the same model structure "
                               "on every process")

    def broadcast_params(self) -> None:
        """Gives every parameter rank 0's value (processes initialize networks
        from their own random state); checks that all hold the same names."""
        named = self.named_params()
        mine = self._structure([n for n, _ in named])
        self._verify(mine, self.sum_floats(*mine), "parameters")
        self._broadcast([p for _, p in named])
        self._known = {n for n, _ in named}

    def _broadcast(self, params: list[torch.Tensor]) -> None:
        if not params:
            return
        values = [p.detach() for p in params]
        flat = _flat(values).to(self.device)
        self._collective(lambda: dist.broadcast(flat, 0))
        with torch.no_grad():
            for p, v in zip(params, _unflat(flat, values)):
                p.copy_(v)

    def reduce_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Checks that every process traced the same parameters, gives parameters
        created during the step rank 0's value, and replaces each gradient by its
        combination over processes (sum or mean, see :meth:`reduction_for`). The
        gradients and the check travel in one all-reduce (the check's numbers are
        kept below 2**20, exact in float32 for up to 16 processes)."""
        store = pyro.get_param_store()
        params = sorted(((store.param_name(p) or "", p) for p in params), key=lambda t: t[0])
        new = [n for n in store.keys() if n not in self._known]
        count, key = self._structure([n for n, _ in params])
        mine = [count, key % (2 ** 20), float(len(new))]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]
        dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        flat = torch.cat([_flat(grads).to(self.device, dtype), torch.tensor(mine, dtype=dtype, device=self.device)])
        self._collective(lambda: dist.all_reduce(flat))
        flat, check = flat[:-len(mine)], flat[-len(mine):]
        self._verify(mine, check.tolist(), "parameters")
        if new:
            self._broadcast([store.get_param(n).unconstrained() for n in sorted(new)])
            self._known.update(new)
        if self.reduce == "mean":
            flat /= self.world
        for (_, p), g in zip(params, _unflat(flat, grads)):
            p.grad = g.to(p.dtype)  # views of one buffer (where the dtypes agree)

    def reduction_for(self, model_trace) -> str:
        """``"mean"`` when the model's data plate is subsampled (its loss is scaled
        to the whole data set on each process), else ``"sum"``; from a trace of the model."""
        from pyro_deepgen.infer.weights import find_data_plate

        frame = find_data_plate(model_trace)
        self.reduce = "mean" if frame is not None and frame.full_size not in (None, frame.size) else "sum"
        return self.reduce

    def combine(self, metrics: dict[str, float], stop: bool) -> tuple[dict[str, float], bool]:
        keys = list(metrics)
        total = self.sum_floats(*(metrics[k] for k in keys), float(stop))
        out = dict(zip(keys, total))
        if self.reduce == "mean" and "loss" in out:
            out["loss"] /= self.world
        if self.check_sync_every and self.step % self.check_sync_every == 0:
            self.check_in_sync()
        return out, total[-1] > 0

    def sum_floats(self, *values: float) -> list[float]:
        """Sums of a few numbers over processes (loss, rows seen, stop votes)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self._collective(lambda: dist.all_reduce(t))
        return t.tolist()

    def broadcast_float(self, value: float | None) -> float:
        t = torch.tensor([value if value is not None else 0.0], dtype=torch.float64, device=self.device)
        self._collective(lambda: dist.broadcast(t, 0))
        return float(t.item())

    def check_in_sync(self) -> None:
        """Debug check that the parameters are identical on every process: two
        checksums per process (a plain and a position-weighted sum), compared."""
        flat = _flat([p.detach().double() for _, p in self.named_params()]).to(self.device)
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=self.device).reciprocal()
        key = torch.stack([flat.sum(), (flat * weights).sum()])
        lo, hi = key.clone(), key.clone()
        self._collective(lambda: dist.all_reduce(lo, dist.ReduceOp.MIN))
        self._collective(lambda: dist.all_reduce(hi, dist.ReduceOp.MAX))
        if not torch.equal(lo, hi):
            raise RuntimeError(f"rank {self.rank}: parameters differ between processes at step "
                               f"{self.step} (checksums {lo.tolist()} .. {hi.tolist()})")

    # -- objective state and random state ----------------------------------
    def sync_state(self, objective: Stateful) -> None:
        objective.sync_state(lambda values: self.sum_floats(*values))

    def merge_rows(self, objective: Stateful) -> None:
        objective.merge_rows(self._exchange)

    def _exchange(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every process's rows (``keys (n,)``, ``values (n, w)``), concatenated in rank order."""
        sizes = torch.tensor([len(keys), values.shape[-1] if values.dim() == 2 else 0],
                             dtype=torch.int64, device=self.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world)]
        self._collective(lambda: dist.all_gather(all_sizes, sizes))
        n_max = max(int(s[0]) for s in all_sizes)
        width = max(int(s[1]) for s in all_sizes)
        k = torch.full((n_max,), -1, dtype=torch.int64)
        v = torch.zeros(n_max, width)
        k[:len(keys)] = keys
        if len(keys):
            v[:len(keys)] = values.float()
        k, v = k.to(self.device), v.to(self.device)
        ks, vs = [torch.zeros_like(k) for _ in range(self.world)], [torch.zeros_like(v) for _ in range(self.world)]
        self._collective(lambda: dist.all_gather(ks, k))
        self._collective(lambda: dist.all_gather(vs, v))
        n = [int(s[0]) for s in all_sizes]
        return (torch.cat([kr[:m].cpu() for kr, m in zip(ks, n)]),
                torch.cat([vr[:m].cpu() for vr, m in zip(vs, n)]))

    def gather_rng(self) -> list[torch.Tensor]:
        """Every process's CPU random state (for a checkpoint that resumes each)."""
        state = torch.get_rng_state().to(self.device)
        out = [torch.zeros_like(state) for _ in range(self.world)]
        self._collective(lambda: dist.all_gather(out, state))
        return [s.cpu() for s in out]


def make_strategy(world: int, device: torch.device, checkpoint: str | None = None,
                  check_sync_every: int | None = None) -> Strategy:
    """The strategy for ``world`` processes (see :func:`init_distributed`):
    :class:`DataParallel` for several, else :class:`Strategy`."""
    if world > 1:
        return DataParallel(device, checkpoint, check_sync_every)
    return Strategy(check_sync_every)


def hash_name(name: str) -> int:
    """A hash of a parameter name that is the same in every process (``hash`` is salted)."""
    h = 1469598103934665603
    for byte in name.encode():
        h = ((h ^ byte) * 1099511628211) % (2 ** 64)
    return h % (2 ** 61)

