"""Guides that wrap or replace an encoder: amortized normalizing flows."""

from pyro_deepgen.guides.flows import (
    FLOWS,
    ConditionalSylvester,
    ConditionedSylvester,
    Flow,
    FlowGuide,
    ParamNet,
    Sylvester,
    flow_transforms,
)

__all__ = [
    "FLOWS",
    "ConditionalSylvester",
    "ConditionedSylvester",
    "Flow",
    "FlowGuide",
    "ParamNet",
    "Sylvester",
    "flow_transforms",
]
