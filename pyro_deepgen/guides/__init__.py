"""Guides that wrap or replace an encoder: amortized normalizing flows and
Hamiltonian variational inference."""

from pyro_deepgen.guides.flows import (
    FLOWS,
    INITS,
    ConditionalSylvester,
    ConditionedSylvester,
    Flow,
    FlowGuide,
    ParamNet,
    Sylvester,
    flow_transforms,
    init_identity_,
)
from pyro_deepgen.guides.hamiltonian import REVERSE, HamiltonianGuide

__all__ = [
    "FLOWS",
    "INITS",
    "ConditionalSylvester",
    "ConditionedSylvester",
    "Flow",
    "FlowGuide",
    "HamiltonianGuide",
    "ParamNet",
    "REVERSE",
    "Sylvester",
    "flow_transforms",
    "init_identity_",
]
