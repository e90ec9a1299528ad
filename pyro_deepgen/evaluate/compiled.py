"""The IWAE-k log-likelihood of a chunk of particles as a compiled static program.

:func:`pyro_deepgen.evaluate.log_likelihood` with ``compiled=True`` draws its
particles through :class:`CompiledChunks`: the first chunk of each shape runs
:func:`~pyro_deepgen.infer.weights.log_weights` as usual (recording the Pyro
parameters), the second is traced with
:func:`~pyro_deepgen.infer.compiled.trace_static` (its result is used), and the
rest run the compiled program, whose elementwise work (activations, the
likelihood's log-density, the log-sum-exp) is fused into few kernels. A model
that is not static (a guard fails, or its sites change between runs) goes back
to ``log_weights`` with one log line.
"""

from __future__ import annotations

import logging
from typing import Callable

import pyro
import torch

from pyro_deepgen.infer.compiled import (BACKENDS, NotStatic, StaticProgram, _Recorder, _signature,
                                         _tensors, trace_static)
from pyro_deepgen.infer.weights import guess_max_plate_nesting, log_weights

__all__ = ["CompiledChunks", "even_chunks"]

logger = logging.getLogger(__name__)


def even_chunks(total: int, most: int) -> list[int]:
    """``total`` split into the fewest chunks of at most ``most``, as even as
    possible (at most two sizes, so at most two programs per batch shape).

    Example:
        >>> even_chunks(5000, 655)
        [625, 625, 625, 625, 625, 625, 625, 625]
    """
    n = -(-total // max(most, 1))
    base, extra = divmod(total, n)
    return [base + 1] * extra + [base] * (n - extra)


class CompiledChunks:
    """``logsumexp`` over ``c`` particles of ``log p(x, z) - log q(z|x)`` for one
    batch, compiled per (argument shapes, ``c``); see the module docstring.

    :param backend: ``"inductor"`` or ``"fx"`` (see :class:`~pyro_deepgen.infer.Compiled`).
    """

    def __init__(self, model: Callable, guide: Callable, max_plate_nesting: int | None = None,
                 backend: str = "inductor"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.model, self.guide = model, guide
        self.max_plate_nesting = max_plate_nesting
        self.backend = backend
        self._cache: dict[tuple, _Recorder | StaticProgram | str] = {}
        self.trace_seconds = 0.0
        self.compile_seconds = 0.0
        self.compiled_calls = 0
        self.general_calls = 0

    def _general(self, args: tuple, c: int) -> torch.Tensor:
        self.general_calls += 1
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, self.guide, args)
        w = log_weights(self.model, self.guide, args, {}, c, self.max_plate_nesting, use_scale=False)
        w.require_per_datapoint("log_likelihood")
        return torch.logsumexp(w.log_w, dim=0)

    def _fallback(self, key: tuple, reason: str) -> None:
        self._cache[key] = reason
        logger.warning("compiled log_likelihood: %s; this batch shape runs log_weights (the general "
                       "Pyro path)", reason)

    @torch.no_grad()
    def __call__(self, args: tuple, c: int) -> torch.Tensor:
        try:
            key = (_signature(args, "an argument"), c)
        except NotStatic as e:
            logger.warning("compiled log_likelihood: %s; using log_weights", e)
            return self._general(args, c)
        entry = self._cache.get(key)
        if isinstance(entry, str):
            return self._general(args, c)
        store = pyro.get_param_store()._params
        if isinstance(entry, StaticProgram):
            if all(store.get(n) is p for n, p in zip(entry.names, entry.params)):
                first = entry.calls == 0
                out = entry(entry.params, _tensors(args))
                if first:
                    self.compile_seconds += entry.compile_seconds
                if out is not None:
                    self.compiled_calls += 1
                    return out[0]
                self._fallback(key, "a value read from the tensors (a check or a branch) differed from "
                                    "the traced one")
                return self._general(args, c)
            entry = None  # parameters replaced: record again
        if entry is None:
            recorder = _Recorder()
            with recorder:
                out = self._general(args, c)
            self._cache[key] = recorder
            return out
        names = list(entry.params)
        params = [store.get(n) for n in names]
        if any(p is not entry.params[n] for n, p in zip(names, params)):
            del self._cache[key]
            return self(args, c)
        try:
            program, outputs, sites, reason = trace_static(
                lambda: [self._general(args, c)], params, _tensors(args), self.backend)
        except Exception as e:  # noqa: BLE001 - any failure to trace
            self._fallback(key, f"tracing failed ({type(e).__name__}: {e})")
            return self._general(args, c)
        if reason is None and sites != entry.sites:
            reason = "the sites differ between two runs"
        if reason is not None:
            self._fallback(key, reason)
        else:
            program.names = names
            self.trace_seconds += program.trace_seconds
            self._cache[key] = program
        return outputs[0]
