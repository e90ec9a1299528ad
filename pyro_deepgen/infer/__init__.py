"""Objectives (``pyro.infer.ELBO`` subclasses) and their registry."""

from pyro_deepgen.infer.iwae import IWAE
from pyro_deepgen.infer.registry import (
    OBJECTIVES,
    make_objective,
    objective_names,
    register_objective,
)
from pyro_deepgen.infer.weights import LogWeights, log_weights

__all__ = [
    "IWAE",
    "LogWeights",
    "OBJECTIVES",
    "log_weights",
    "make_objective",
    "objective_names",
    "register_objective",
]
