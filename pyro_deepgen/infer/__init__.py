"""Objectives (``pyro.infer.ELBO`` subclasses) and their registry."""

from pyro_deepgen.infer.compiled import Compiled, NotStatic, StaticProgram, trace_static
from pyro_deepgen.infer.enum_elbo import EnumELBO
from pyro_deepgen.infer.iwae import IWAE
from pyro_deepgen.infer.kl import KLSchedule, with_kl
from pyro_deepgen.infer.log_joint import log_joint
from pyro_deepgen.infer.mcem import MCEM
from pyro_deepgen.infer.mcmc_refined import MCMCRefinedELBO
from pyro_deepgen.infer.nvil import NVIL
from pyro_deepgen.infer.objective import Objective, Stateful, Terms
from pyro_deepgen.infer.registry import (
    OBJECTIVES,
    make_objective,
    objective_names,
    register_objective,
)
from pyro_deepgen.infer.reinforce import Reinforce
from pyro_deepgen.infer.rws import RWS, WakeSleep
from pyro_deepgen.infer.stl import STL
from pyro_deepgen.infer.vimco import VIMCO
from pyro_deepgen.infer.weights import DetachSamples, LogWeights, log_weights

__all__ = [
    "Compiled",
    "DetachSamples",
    "EnumELBO",
    "IWAE",
    "KLSchedule",
    "LogWeights",
    "MCEM",
    "MCMCRefinedELBO",
    "NVIL",
    "NotStatic",
    "OBJECTIVES",
    "Objective",
    "RWS",
    "Reinforce",
    "STL",
    "Stateful",
    "StaticProgram",
    "Terms",
    "VIMCO",
    "WakeSleep",
    "log_joint",
    "log_weights",
    "make_objective",
    "objective_names",
    "register_objective",
    "trace_static",
    "with_kl",
]
