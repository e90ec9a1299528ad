"""The one evaluation path: per-datapoint log-likelihood, ELBO, active units."""

from pyro_deepgen.evaluate.active_units import ActiveUnits, active_units
from pyro_deepgen.evaluate.likelihood import elbo, log_likelihood, log_likelihood_batch

__all__ = ["ActiveUnits", "active_units", "elbo", "log_likelihood", "log_likelihood_batch"]
