"""Model/guide pairs."""

from pyro_deepgen.models.registry import MODELS, build_model, load_model, register_model, save_model
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.vae import VAE

__all__ = ["MODELS", "SigmoidBeliefNet", "VAE", "build_model", "load_model", "register_model", "save_model"]
