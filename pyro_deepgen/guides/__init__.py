"""Guides that wrap or replace an encoder: amortized normalizing flows and
Hamiltonian variational inference; and flows fitted to the 2-D test energies."""

from pyro_deepgen.guides.energy_fit import EnergyFit, fit_energy
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
    "EnergyFit",
    "Flow",
    "FlowGuide",
    "HamiltonianGuide",
    "ParamNet",
    "REVERSE",
    "Sylvester",
    "fit_energy",
    "flow_transforms",
    "init_identity_",
]
