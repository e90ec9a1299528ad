"""Reusable networks."""

from pyro_deepgen.nn.encoders import NormalEncoder
from pyro_deepgen.nn.mlp import ACTIVATIONS, MLP

__all__ = ["ACTIVATIONS", "MLP", "NormalEncoder"]
