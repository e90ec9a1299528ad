"""Objective names for ``fit``, the CLI and ``compare``.

A name is either exact (``"elbo"``) or a family with a particle count
(``"iwae-5"``). Later objectives add themselves with :func:`register_objective`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from pyro_deepgen.infer.iwae import IWAE
from pyro_deepgen.infer.kl import KLSchedule, with_kl
from pyro_deepgen.infer.mcem import MCEM
from pyro_deepgen.infer.mcmc_refined import MCMCRefinedELBO
from pyro_deepgen.infer.nvil import NVIL
from pyro_deepgen.infer.reinforce import Reinforce
from pyro_deepgen.infer.rws import RWS, WakeSleep
from pyro_deepgen.infer.stl import STL
from pyro_deepgen.infer.vimco import VIMCO

__all__ = ["OBJECTIVES", "ObjectiveSpec", "register_objective", "make_objective", "objective_names"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registry entry: ``factory()`` or, with ``takes_k``, ``factory(k)``."""

    factory: Callable[..., ELBO]
    takes_k: bool
    description: str


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, factory: Callable[..., ELBO], *, takes_k: bool = False,
                       description: str = "") -> None:
    """Registers ``name`` (or the family ``name-K`` when ``takes_k``)."""
    if not re.fullmatch(r"[a-z][a-z0-9\-]*[a-z]|[a-z]", name):
        raise ValueError(f"objective names are lower-case words joined by '-'; got {name!r}")
    OBJECTIVES[name] = ObjectiveSpec(factory, takes_k, description)


def objective_names() -> list[str]:
    """The valid names, families shown as ``name-K``."""
    return sorted(f"{n}-K" if s.takes_k else n for n, s in OBJECTIVES.items())


def make_objective(name: str, kl: KLSchedule | None = None) -> ELBO:
    """Builds the objective called ``name``, e.g. ``"elbo"`` or ``"iwae-50"``,
    with the KL schedule ``kl`` (see :func:`~pyro_deepgen.infer.kl.with_kl`)."""
    spec = OBJECTIVES.get(name)
    if spec is not None and not spec.takes_k:
        return with_kl(spec.factory(), kl)
    m = re.fullmatch(r"(.+)-(\d+)", name)
    if m and m.group(1) in OBJECTIVES and OBJECTIVES[m.group(1)].takes_k:
        return with_kl(OBJECTIVES[m.group(1)].factory(int(m.group(2))), kl)
    hint = f" ({name!r} needs a particle count, e.g. {name}-5)" if spec is not None else ""
    raise ValueError(f"unknown objective {name!r}{hint}; valid: {', '.join(objective_names())}")


register_objective("elbo", lambda: Trace_ELBO(), description="Trace_ELBO, 1 particle")
register_objective("meanfield", lambda: TraceMeanField_ELBO(),
                   description="TraceMeanField_ELBO: analytic KL where available")
register_objective("iwae", lambda k: IWAE(num_particles=k), takes_k=True,
                   description="importance-weighted bound with k particles (Burda et al. 2016)")
register_objective("iwae-dreg", lambda k: IWAE(num_particles=k, gradient="dreg"), takes_k=True,
                   description="IWAE with doubly reparameterized guide gradients (Tucker et al. 2019)")
register_objective("stl", lambda: STL(), description="ELBO, sticking-the-landing gradient (Roeder et al. 2017)")
register_objective("reinforce", lambda: Reinforce(baseline="average"),
                   description="score-function ELBO, decaying-average baseline")
register_objective("nvil", lambda: NVIL(), description="score-function ELBO, NVIL baselines (Mnih & Gregor 2014)")
register_objective("vimco", lambda k: VIMCO(num_particles=k), takes_k=True,
                   description="IWAE bound, leave-one-out control variates (Mnih & Rezende 2016)")
register_objective("wake-sleep", lambda: WakeSleep(), description="wake-sleep (Hinton et al. 1995)")
register_objective("rws", lambda k: RWS(num_particles=k), takes_k=True,
                   description="reweighted wake-sleep, wake-phi (Bornschein & Bengio 2015)")
register_objective("mcmc-refined", lambda: MCMCRefinedELBO(),
                   description="ELBO for the guide; the model learns from HMC-refined guide samples "
                               "(Hoffman 2017)")
register_objective("mcem", lambda: MCEM(),
                   description="Monte Carlo EM, persistent HMC chains; the guide learns by the "
                               "ELBO, to report a bound")
