"""Model/guide pairs."""

from pyro_deepgen.models.categorical_vae import CategoricalVAE
from pyro_deepgen.models.nice import (
    NICE,
    DequantizedDataset,
    FlowModel,
    RealNVP,
    bits_per_dim,
    dequantize,
    inpaint,
)
from pyro_deepgen.models.registry import (
    MODELS,
    ModelSpec,
    build_model,
    load_model,
    model_options,
    model_spec,
    register_model,
    save_model,
)
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.vae import VAE

__all__ = [
    "CategoricalVAE",
    "DequantizedDataset",
    "FlowModel",
    "MODELS",
    "ModelSpec",
    "NICE",
    "RealNVP",
    "SigmoidBeliefNet",
    "VAE",
    "bits_per_dim",
    "build_model",
    "dequantize",
    "inpaint",
    "load_model",
    "model_options",
    "model_spec",
    "register_model",
    "save_model",
]
