r"""Compiled objectives: an objective's own Pyro code, traced once per input shape
into a static tensor program, then run without Pyro's Python.

:class:`Compiled` wraps one of :mod:`pyro_deepgen.infer`'s objectives, Pyro's
``Trace_ELBO`` or ``TraceMeanField_ELBO``, and is itself a ``pyro.infer.ELBO``,
so it goes wherever the wrapped one goes (``SVI``, ``fit``).

How it works, for each input signature (the argument tensors' shapes, dtypes
and devices, the other arguments' values, the model and the guide):

1. The first call runs the wrapped objective as usual, recording the Pyro
   parameters it touches and the structure of its sites (names, shapes).
2. The second call runs it again under ``torch.fx.experimental.proxy_tensor.make_fx``
   with the parameters' unconstrained tensors as the program's inputs. That run
   *is* the step's result (real tensors flow through it), and it leaves a
   graph of ATen operations: the model, the guide, the objective's surrogate
   and its gradient (``backward``/``torch.autograd.grad``, exactly as the
   wrapped objective calls them). Random draws stay operations of the graph,
   so each call draws fresh noise, and in ``backend="fx"`` the same numbers as
   the general path under the same seed.
3. Every value the Python code read out of a tensor while tracing (``bool(t)``,
   ``t.item()``: argument checks, Pyro's validation, NaN warnings, a branch on
   the data) becomes a *guard*: the graph recomputes it, and a call whose
   guards differ from the traced values is recomputed by the general path
   (which raises the model's own error where there is one) and the signature is
   marked dynamic: from then on it runs the general path, with one log line.
4. Later calls run the graph (``backend="fx"``: the ATen graph as it is;
   ``backend="inductor"``: ``torch.compile``\ d, with fused kernels), write
   ``.grad`` into the Pyro parameters as the wrapped objective would, and emit
   the ``param`` sites that ``SVI`` collects to step its optimizer.

The program is static by construction; what cannot be checked falls back:
a site structure that differs between the first two runs (a varying number of
sites), objectives with running state (baselines, MCEM chains, adapted step
sizes), a KL warm-up still in progress, tensors that require grad but are not
Pyro parameters, operations with data-dependent output shapes, and in-place
changes to tensors that outlive the step. Each falls back with one log line
(logger ``pyro_deepgen.infer.compiled``) and gives the general path's answer.

Not checked: structure that depends on Python's own random numbers or on
global state other than the arguments and the parameters, between the two
traced runs and later calls.

Example:
    >>> import pyro
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from pyro_deepgen.models import VAE
    >>> vae = VAE(x_dim=16, z_dim=2, hidden=(8,))
    >>> loss = Compiled(Trace_ELBO(), backend="fx")
    >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    >>> x = torch.bernoulli(torch.full((4, 16), 0.5))
    >>> for _ in range(3):  # general run, traced run, compiled run
    ...     value = svi.step(x)
    >>> loss.stats()["compiled_calls"]
    1
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyro
import pyro.infer.trace_elbo
import pyro.infer.trace_mean_field_elbo
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from torch.fx.experimental.proxy_tensor import get_proxy_mode, make_fx
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_deepgen.infer.mcem import MCEM
from pyro_deepgen.infer.mcmc_refined import MCMCRefinedELBO
from pyro_deepgen.infer.objective import Exchange, Objective, Stateful
from pyro_deepgen.infer.reinforce import Reinforce

__all__ = ["BACKENDS", "Compiled", "NotStatic", "StaticProgram", "trace_static"]

logger = logging.getLogger(__name__)

#: ``"inductor"``: the traced graph ``torch.compile``\ d; ``"fx"``: the traced
#: ATen graph run as it is (no compiler, draws the same random numbers as the
#: general path).
BACKENDS = ("inductor", "fx")
MODES = ("grads", "loss", "differentiable")

_aten = torch.ops.aten


class NotStatic(Exception):  # noqa: N818 - a reason, not an error
    """Why a signature cannot be compiled (it runs the general path instead)."""


# ----------------------------------------------------------------------------- recording


class _Recorder(Messenger):
    """Records the Pyro parameters touched (name -> unconstrained tensor) and the
    structure of the sites (type, name, value shape) in the order they run."""

    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, torch.Tensor] = {}
        self.sites: list[tuple] = []

    def _pyro_post_param(self, msg: dict) -> None:
        value = msg["value"]
        unconstrained = value.unconstrained() if hasattr(value, "unconstrained") else value
        self.params.setdefault(msg["name"], unconstrained)
        self.sites.append(("param", msg["name"], tuple(value.shape)))

    def _pyro_post_sample(self, msg: dict) -> None:
        value = msg["value"]
        shape = tuple(value.shape) if torch.is_tensor(value) else None
        self.sites.append(("sample", msg["name"], shape, bool(msg["is_observed"])))


class _ScalarLog(TorchDispatchMode):
    """Inside ``make_fx``: each read of a value out of a traced tensor (the graph's
    ``_local_scalar_dense`` node it created) and the value it gave. Reads of
    constants create no node and need no guard."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[torch.fx.Node, Any] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in (_aten._local_scalar_dense.default, _aten.is_nonzero.default):
            return func(*args, **(kwargs or {}))
        mode = get_proxy_mode()
        graph = mode.tracer.graph if mode is not None else None
        last = next(reversed(graph.nodes)) if graph is not None else None
        out = func(*args, **(kwargs or {}))
        if graph is not None:
            node = next(reversed(graph.nodes))
            if node is not last and node.target is _aten._local_scalar_dense.default:
                self.values[node] = out
        return out


@contextlib.contextmanager
def _tensor_valued_torch_item() -> Iterator[None]:
    """Pyro's Trace_ELBO reads its loss value out with ``torch_item`` (a float);
    while tracing, keep it a (detached) tensor, so that the value is an output of
    the graph instead of a constant baked into it."""
    modules = (pyro.infer.trace_elbo, pyro.infer.trace_mean_field_elbo)
    saved = [m.torch_item for m in modules]

    def item(x: Any) -> Any:
        return x.detach() if torch.is_tensor(x) else x

    for m in modules:
        m.torch_item = item
    try:
        yield
    finally:
        for m, f in zip(modules, saved):
            m.torch_item = f


# ----------------------------------------------------------------------------- signatures


def _signature(value: Any, where: str) -> Any:
    """A hashable description of an argument: tensors by shape, dtype, device and
    whether they require grad; plain values by value."""
    if torch.is_tensor(value):
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_signature(v, where) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _signature(v, where)) for k, v in sorted(value.items())))
    raise NotStatic(f"{where} is a {type(value).__name__}; a compiled program takes tensors, "
                    "numbers, strings and tuples, lists or dicts of them")


def _tensors(value: Any) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for _, v in sorted(value.items()) for t in _tensors(v)]
    return []


def _callable_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


# ----------------------------------------------------------------------------- the graph


def _check_graph(gm: torch.fx.GraphModule) -> None:
    """Raises :class:`NotStatic` where the traced graph would not be a faithful
    program for other inputs of the same signature."""
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            const = getattr(gm, node.target)
            if torch.is_tensor(const) and const.requires_grad:
                raise NotStatic(
                    f"the computation uses a tensor of shape {tuple(const.shape)} that requires grad "
                    "but is not a Pyro parameter (register the network with pyro.module)")
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        tags = node.target.tags
        if torch.Tag.dynamic_output_shape in tags or (
                torch.Tag.data_dependent_output in tags
                and node.target is not _aten._local_scalar_dense.default):
            raise NotStatic(f"the operation {node.target} has a data-dependent output")
        for arg, value in zip(node.target._schema.arguments, node.args):
            if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, torch.fx.Node) \
                    and value.op in ("placeholder", "get_attr"):
                raise NotStatic(f"the operation {node.target} changes in place a tensor that outlives "
                                "the step (e.g. a running statistic)")


def _add_guards(gm: torch.fx.GraphModule, values: dict[torch.fx.Node, Any]) -> int:
    """Replaces each read of a tensor value (``_local_scalar_dense``) by a comparison
    with the value it had while tracing, and appends their conjunction to the
    outputs. Returns the number of guards."""
    graph = gm.graph
    reads = [n for n in graph.nodes
             if n.op == "call_function" and n.target is _aten._local_scalar_dense.default]
    checks = []
    for node in reads:
        if node not in values:
            raise NotStatic(f"a value read from a tensor ({node.name}) was not recorded")
        value = values[node]
        if not isinstance(value, (bool, int, float)):
            raise NotStatic(f"a tensor value of type {type(value).__name__} was read")
        with graph.inserting_before(node):
            eq = graph.call_function(_aten.eq.Scalar, (node.args[0], value))
            checks.append(graph.call_function(_aten.view.default, (eq, [-1])))
        node.replace_all_uses_with(eq)  # no users: Python consumed the value
        graph.erase_node(node)
    output = next(n for n in reversed(graph.nodes) if n.op == "output")
    with graph.inserting_before(output):
        if checks:
            ok = graph.call_function(_aten.all.default, (graph.call_function(_aten.cat.default, (checks,)),))
        else:
            ok = None
    (outs,) = output.args
    output.args = (list(outs) + [ok],)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return len(checks)


def _compile_graph(gm: torch.fx.GraphModule, backend: str, exact_random: bool,
                   options: dict[str, Any]) -> Callable:
    if backend == "fx":
        return gm
    compiled = torch.compile(gm, fullgraph=True, dynamic=False, **options)
    if not exact_random:
        return compiled

    def exact(*a: torch.Tensor) -> Any:
        with torch._inductor.config.patch(fallback_random=True):
            return compiled(*a)
    return exact


class StaticProgram:
    """A traced, guarded tensor program (see :func:`trace_static`): call it with
    the same parameters and new inputs of the traced shapes; it returns the
    outputs, or ``None`` when a guard failed (a value read from the tensors while
    tracing came out different), in which case nothing is valid and the caller
    runs the general path."""

    def __init__(self, graph: torch.fx.GraphModule, params: list[torch.Tensor], num_guards: int,
                 trace_seconds: float, backend: str, exact_random: bool = False,
                 options: dict[str, Any] | None = None):
        self.graph = graph
        self.params = params
        self.num_guards = num_guards
        self.trace_seconds = trace_seconds
        self.backend = backend
        self.fn = _compile_graph(graph, backend, exact_random, options or {})
        #: seconds of the first call (``torch.compile`` compiles then)
        self.compile_seconds: float | None = None
        self.calls = 0

    def __call__(self, params: list[torch.Tensor], inputs: list[torch.Tensor]) -> list | None:
        first = self.calls == 0
        start = time.perf_counter() if first else 0.0
        outs = self.fn(*params, *inputs)
        if first:
            self.compile_seconds = time.perf_counter() - start
        self.calls += 1
        ok = outs[-1]
        if ok is not None and not bool(ok):
            return None
        return list(outs[:-1])


def trace_static(fn: Callable[[], list], params: list[torch.Tensor], inputs: list[torch.Tensor],
                 backend: str = "inductor", exact_random: bool = False,
                 options: dict[str, Any] | None = None) -> tuple[StaticProgram | None, list, list, str | None]:
    """Runs ``fn()`` once, for real, while tracing it into a :class:`StaticProgram`
    whose inputs are ``params`` then ``inputs`` (the very tensors ``fn`` reads).

    Returns ``(program, outputs, sites, reason)``: the program (``None`` when
    it would not be static, ``reason`` says why), ``fn``'s outputs of this run
    (valid either way), and the Pyro sites it ran (type, name, shape). The
    program leaves out ``fn``'s ``None`` outputs. An exception raised by ``fn``
    or by the tracer propagates.
    """
    recorder, scalars = _Recorder(), _ScalarLog()
    outputs: list = []

    def body(*flat: torch.Tensor) -> list:
        with recorder, scalars:
            out = fn()
        outputs[:] = out
        return out

    start = time.perf_counter()
    gm = make_fx(body, tracing_mode="real", _error_on_data_dependent_ops=False)(*params, *inputs)
    try:
        _check_graph(gm)
        if any(o is None for o in outputs):  # e.g. parameters without a gradient: dropped
            out_node = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
            (outs,) = out_node.args
            out_node.args = ([o for o, v in zip(outs, outputs) if v is not None],)
            gm.recompile()
        num_guards = _add_guards(gm, scalars.values)
    except NotStatic as e:
        return None, outputs, recorder.sites, str(e)
    program = StaticProgram(gm, params, num_guards, time.perf_counter() - start, backend,
                            exact_random, options)
    return program, outputs, recorder.sites, None


@dataclass
class _Program:
    """One compiled signature of :class:`Compiled`."""

    names: list[str]  # the Pyro parameters, in input order
    has_grad: list[bool]  # which parameters get a gradient output (mode "grads")
    program: StaticProgram


@dataclass
class _Seen:
    """A signature seen once: the general run's record."""

    recorder: _Recorder


@dataclass
class _Dynamic:
    reason: str


@dataclass
class _Stats:
    traces: int = 0
    compiled_calls: int = 0
    general_calls: int = 0
    guard_failures: int = 0
    trace_seconds: float = 0.0
    compile_seconds: float = 0.0
    fallbacks: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- the wrapper


class Compiled(ELBO):
    r"""``objective``, traced once per input signature into a static tensor
    program and run as that program afterwards (see the module docstring).

    Gives the same loss and gradients as ``objective`` (with ``backend="fx"``, the
    same random draws too, under the same seed), writes ``.grad`` into the Pyro
    parameters as ``objective.loss_and_grads`` does, and falls back to
    ``objective`` itself, with one log line, where the program would not be
    static.

    :param objective: one of :mod:`pyro_deepgen.infer`'s objectives, or Pyro's
        ``Trace_ELBO`` / ``TraceMeanField_ELBO``.
    :param backend: ``"inductor"`` (``torch.compile`` the traced graph: fused
        kernels; its random numbers come from the compiler's own generator unless
        ``exact_random``) or ``"fx"`` (run the traced ATen graph as it is).
    :param exact_random: with ``"inductor"``, draw the random numbers with
        PyTorch's eager generator, so that they match the general path's draws
        (slower).
    :param compile_options: passed to ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).

    ``compile_seconds`` (tracing plus the first compiled run) and ``stats()``
    report what compiling cost and how many calls each path took.
    """

    def __init__(self, objective: ELBO, backend: str = "inductor", exact_random: bool = False,
                 compile_options: dict[str, Any] | None = None):
        if isinstance(objective, Compiled):
            raise TypeError("Compiled(objective): objective is already Compiled")
        if not isinstance(objective, ELBO):
            raise TypeError(f"Compiled(objective) needs a pyro.infer.ELBO (e.g. Trace_ELBO() or "
                            f"pyro_deepgen.infer.IWAE(50)); got {type(objective).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        super().__init__(num_particles=objective.num_particles,
                         max_plate_nesting=objective.max_plate_nesting,
                         vectorize_particles=objective.vectorize_particles)
        self.objective = objective
        self.backend = backend
        self.exact_random = exact_random
        self.compile_options = dict(compile_options or {})
        self._cache: dict[tuple, _Seen | _Program | _Dynamic] = {}
        self._stats = _Stats()
        self._unsupported = self._why_unsupported(objective)
        self._logged: set[str] = set()

    # -- the ELBO interface ------------------------------------------------------------

    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The wrapped objective's ``loss`` (no gradients)."""
        with torch.no_grad():
            out = self._call("loss", model, guide, args, kwargs)
        return float(out)

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The wrapped objective's ``loss_and_grads``: returns the loss and
        accumulates the estimator's gradients into the Pyro parameters' ``.grad``."""
        return float(self._call("grads", model, guide, args, kwargs))

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """The wrapped objective's ``differentiable_loss`` (where it has one), as a
        tensor that autograd differentiates through the compiled program."""
        if not hasattr(self.objective, "differentiable_loss"):
            raise NotImplementedError(f"{type(self.objective).__name__} has no differentiable_loss")
        mode = "differentiable" if torch.is_grad_enabled() else "loss"
        return self._call(mode, model, guide, args, kwargs)

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        return self.objective._get_trace(model, guide, args, kwargs)

    # the wrapped objective's running state (the Stateful protocol) and step, passed through
    def get_state(self) -> dict[str, Any]:
        return self.objective.get_state() if isinstance(self.objective, Stateful) else {}

    def set_state(self, state: dict[str, Any]) -> None:
        if isinstance(self.objective, Stateful):
            self.objective.set_state(state)

    def sync_state(self, reduce_sum: Callable[[list[float]], list[float]]) -> None:
        if isinstance(self.objective, Stateful):
            self.objective.sync_state(reduce_sum)

    def merge_rows(self, exchange: Exchange) -> None:
        if isinstance(self.objective, Stateful):
            self.objective.merge_rows(exchange)

    def set_step(self, step: int) -> None:
        if isinstance(self.objective, Objective):
            self.objective.set_step(step)

    def init_params(self, model: Callable, guide: Callable, *args, **kwargs) -> None:
        if isinstance(self.objective, Objective):
            self.objective.init_params(model, guide, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # the wrapped objective's own attributes (kl, kl_step, chains, ...), for code
        # that reads them through the wrapper, such as fit's KL-weight record
        if name == "objective" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.objective, name)

    @property
    def compile_seconds(self) -> float:
        """Seconds spent tracing and compiling (first compiled runs included), all signatures."""
        return self._stats.trace_seconds + self._stats.compile_seconds

    def stats(self) -> dict[str, Any]:
        """Counts and times: ``traces``, ``compiled_calls``, ``general_calls``,
        ``guard_failures``, ``trace_seconds``, ``compile_seconds`` and the
        ``fallbacks``' reasons."""
        s = self._stats
        return {"traces": s.traces, "compiled_calls": s.compiled_calls,
                "general_calls": s.general_calls, "guard_failures": s.guard_failures,
                "trace_seconds": s.trace_seconds, "compile_seconds": s.compile_seconds,
                "fallbacks": list(s.fallbacks)}

    def __repr__(self) -> str:
        return f"Compiled({self.objective!r}, backend={self.backend!r})"

    # -- dispatch ----------------------------------------------------------------------

    @staticmethod
    def _why_unsupported(objective: ELBO) -> str | None:
        if isinstance(objective, (Reinforce, MCEM, MCMCRefinedELBO)):
            return (f"{type(objective).__name__} keeps running state between steps (baselines, "
                    "chains or adapted step sizes) that a static program would freeze")
        if isinstance(objective, Objective) or type(objective) in (Trace_ELBO, TraceMeanField_ELBO):
            return None
        return (f"{type(objective).__name__} is not one of pyro_deepgen's objectives, Trace_ELBO or "
                "TraceMeanField_ELBO")

    def _log_fallback(self, reason: str, what: str) -> None:
        line = (f"Compiled({type(self.objective).__name__}): {reason}; {what} runs the general "
                "Pyro path")
        if line not in self._logged:  # once per reason
            self._logged.add(line)
            self._stats.fallbacks.append(line)
            logger.warning(line)

    def _key(self, mode: str, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple:
        obj = self.objective
        kl = getattr(obj, "kl", None)
        factor = None
        if kl is not None:
            if kl.warmup and obj.kl_step < kl.warmup:
                raise NotStatic(f"the KL warm-up is in progress (step {obj.kl_step} of {kl.warmup}; "
                                "its factor changes every step); compiling after it")
            factor = kl.factor(obj.kl_step)
        return (mode, model, guide, _signature(args, "an argument"), _signature(kwargs, "a keyword argument"),
                is_validation_enabled(), factor)

    def _call(self, mode: str, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Any:
        what = f"{_callable_name(model)}/{_callable_name(guide)}"
        if self._unsupported is not None:
            self._log_fallback(self._unsupported, what)
            return self._general(mode, model, guide, args, kwargs)
        try:
            key = self._key(mode, model, guide, args, kwargs)
        except NotStatic as e:
            self._log_fallback(str(e), what)
            return self._general(mode, model, guide, args, kwargs)
        entry = self._cache.get(key)
        if isinstance(entry, _Program):
            params = self._current_params(entry)
            if params is not None:
                out = self._run(entry, mode, params, args, kwargs)
                if out is not None:
                    return out
                reason = ("a value read from the tensors (a check, a branch or a count) differed from "
                          "the traced one, so the program is not static for these inputs")
                self._cache[key] = _Dynamic(reason)
                self._log_fallback(reason, what)
                return self._general(mode, model, guide, args, kwargs)
            entry = None  # the parameters were replaced: trace again
        if isinstance(entry, _Dynamic):
            return self._general(mode, model, guide, args, kwargs)
        if entry is None:
            recorder = _Recorder()
            with recorder:
                out = self._general(mode, model, guide, args, kwargs)
            self._cache[key] = _Seen(recorder)
            return out
        return self._trace(key, entry, mode, model, guide, args, kwargs, what)

    # -- the general path --------------------------------------------------------------

    def _general(self, mode: str, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Any:
        self._stats.general_calls += 1
        if mode == "grads":
            return self.objective.loss_and_grads(model, guide, *args, **kwargs)
        if mode == "loss":
            return torch.as_tensor(self.objective.loss(model, guide, *args, **kwargs))
        return self.objective.differentiable_loss(model, guide, *args, **kwargs)

    # -- tracing -----------------------------------------------------------------------

    def _traced_body(self, mode: str, model: Callable, guide: Callable, args: tuple, kwargs: dict,
                     params: list[torch.Tensor]) -> list:
        """The wrapped objective's own code, returning tensors: ``[loss, *grads]``
        for ``"grads"``, ``[loss]`` otherwise."""
        obj = self.objective
        if mode == "differentiable":
            with _tensor_valued_torch_item():
                return [obj.differentiable_loss(model, guide, *args, **kwargs)]
        if mode == "loss":
            with torch.no_grad(), _tensor_valued_torch_item():
                if isinstance(obj, Objective):
                    return [-obj._terms(model, guide, args, kwargs).bound]
                return [obj.loss(model, guide, *args, **kwargs)]
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            if isinstance(obj, Objective):
                # Objective.loss_and_grads, with its final .item() left out (the loss
                # stays a tensor) and its step count taken outside the program
                loss = obj._backward(obj._terms(model, guide, args, kwargs))
            else:
                with _tensor_valued_torch_item():
                    loss = obj.loss_and_grads(model, guide, *args, **kwargs)
            grads = [p.grad for p in params]
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        return [torch.as_tensor(loss)] + grads

    def _state(self) -> dict[str, Any]:
        def freeze(v: Any) -> Any:
            if torch.is_tensor(v):
                return ("tensor", id(v), v._version)
            if isinstance(v, dict):
                return tuple((k, freeze(x)) for k, x in v.items())
            if isinstance(v, (list, tuple)):
                return tuple(freeze(x) for x in v)
            if isinstance(v, (numbers.Number, str, type(None))):
                return v
            return ("object", id(v))
        return {k: freeze(v) for k, v in vars(self.objective).items() if k != "kl_step"}

    def _trace(self, key: tuple, seen: _Seen, mode: str, model: Callable, guide: Callable,
               args: tuple, kwargs: dict, what: str) -> Any:
        names = list(seen.recorder.params)
        store = dict(pyro.get_param_store().named_parameters())
        params = [store.get(n) for n in names]
        if any(p is None or p is not seen.recorder.params[n] for n, p in zip(names, params)):
            # parameters were created or replaced since the first run: record again
            self._cache.pop(key, None)
            return self._call(mode, model, guide, args, kwargs)
        inputs = _tensors(args) + _tensors(kwargs)
        if any(t is p for t in inputs for p in params):
            raise ValueError("Compiled: an argument is one of the Pyro parameters; pass data only")
        state = self._state()
        try:
            # params and inputs are the very tensors the objective's code reads, so
            # make_fx maps each use of them to the program's inputs
            program, outputs, sites, reason = trace_static(
                lambda: self._traced_body(mode, model, guide, args, kwargs, params), params, inputs,
                self.backend, self.exact_random, self.compile_options)
        except Exception as e:  # noqa: BLE001 - any failure to trace
            # the run may have been cut short: redo it on the general path (which raises
            # the model's own error, if that was one)
            out = self._general(mode, model, guide, args, kwargs)
            first = str(e).splitlines()[0] if str(e) else ""
            reason = f"tracing failed ({type(e).__name__}: {first})"
            self._cache[key] = _Dynamic(reason)
            self._log_fallback(reason, what)
            return out
        self._stats.traces += 1
        loss, grads = outputs[0], outputs[1:]
        if mode == "grads":  # the traced run was a full step: keep its gradients
            self._write_grads(params, grads)
        # differentiable_loss counted its step itself while tracing
        result = loss if mode == "differentiable" else self._finish(mode, loss)
        if reason is None and sites != seen.recorder.sites:
            reason = ("the sites differ between two runs (a varying number of sites or shapes): "
                      + _diff(seen.recorder.sites, sites))
        if reason is None and self._state() != state:
            reason = (f"{type(self.objective).__name__} changed its own state during the step, "
                      "which a static program would freeze")
        if reason is not None:
            self._cache[key] = _Dynamic(reason)
            self._log_fallback(reason, what)
            return result
        self._stats.trace_seconds += program.trace_seconds
        self._cache[key] = _Program(names, [g is not None for g in grads], program)
        return result

    # -- running -----------------------------------------------------------------------

    def _current_params(self, entry: _Program) -> list[torch.Tensor] | None:
        store = pyro.get_param_store()._params
        params = []
        for name, traced in zip(entry.names, entry.program.params):
            p = store.get(name)
            if p is not traced:
                return None
            params.append(p)
        return params

    def _run(self, entry: _Program, mode: str, params: list[torch.Tensor], args: tuple,
             kwargs: dict) -> Any:
        program = entry.program
        first = program.calls == 0
        inputs = _tensors(args) + _tensors(kwargs)
        if mode == "differentiable":
            outs = program(params, inputs)
        else:
            with torch.no_grad():
                outs = program(params, inputs)
        if first:
            self._stats.compile_seconds += program.compile_seconds
        if outs is None:
            self._stats.guard_failures += 1
            return None
        self._stats.compiled_calls += 1
        for name in entry.names:  # the param sites that SVI collects to step its optimizer
            pyro.param(name)
        if mode == "grads":
            grads = iter(outs[1:])
            self._write_grads(params, [next(grads) if h else None for h in entry.has_grad])
        return self._finish(mode, outs[0])

    @staticmethod
    def _write_grads(params: list[torch.Tensor], grads: list[torch.Tensor | None]) -> None:
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g
            else:  # accumulate in place, as autograd's AccumulateGrad does
                p.grad.add_(g)

    def _finish(self, mode: str, loss: torch.Tensor) -> Any:
        if mode != "loss" and isinstance(self.objective, Objective) and torch.is_grad_enabled():
            self.objective._count_step()
        return loss


def _diff(a: list[tuple], b: list[tuple]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"site {i}: {x} then {y}"
    return f"{len(a)} sites then {len(b)}"
