"""Model/guide pairs."""

from pyro_deepgen.models.categorical_vae import CategoricalVAE
from pyro_deepgen.models.registry import (
    MODELS,
    ModelSpec,
    build_model,
    load_model,
    model_options,
    register_model,
    save_model,
)
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.vae import VAE

__all__ = [
    "CategoricalVAE",
    "MODELS",
    "ModelSpec",
    "SigmoidBeliefNet",
    "VAE",
    "build_model",
    "load_model",
    "model_options",
    "register_model",
    "save_model",
]
