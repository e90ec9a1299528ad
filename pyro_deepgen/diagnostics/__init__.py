"""Diagnostics: gradient signal-to-noise, posterior collapse."""

from pyro_deepgen.diagnostics.collapse import kl_per_unit, mutual_information
from pyro_deepgen.diagnostics.gradient_snr import GradientStats, gradient_snr, warm_up_objective

__all__ = ["GradientStats", "gradient_snr", "kl_per_unit", "mutual_information", "warm_up_objective"]
