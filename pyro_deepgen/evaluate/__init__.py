"""The one evaluation path: per-datapoint log-likelihood (IWAE-k or AIS, with BDMC
bounds), ELBO, active units."""

from pyro_deepgen.evaluate.active_units import ActiveUnits, active_units
from pyro_deepgen.evaluate.ais import (AISEstimate, BDMCResult, ais_log_likelihood, annealing_schedule,
                                       bdmc)
from pyro_deepgen.evaluate.likelihood import elbo, log_likelihood, log_likelihood_batch

__all__ = [
    "AISEstimate",
    "ActiveUnits",
    "BDMCResult",
    "active_units",
    "ais_log_likelihood",
    "annealing_schedule",
    "bdmc",
    "elbo",
    "log_likelihood",
    "log_likelihood_batch",
]
