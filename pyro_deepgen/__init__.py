"""pyro_deepgen: deep generative models and variational gradient estimators for Pyro."""

__version__ = "0.1.0"

__all__ = ["__version__"]
