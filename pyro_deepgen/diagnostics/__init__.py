"""Diagnostics: gradient signal-to-noise and friends."""

from pyro_deepgen.diagnostics.gradient_snr import GradientStats, gradient_snr, warm_up_objective

__all__ = ["GradientStats", "gradient_snr", "warm_up_objective"]
