r"""Hamiltonian Monte Carlo, written once: the batched HMC transition that MCEM,
the MCMC-refined ELBO and AIS share, its step-size adaptation, the differentiable
leapfrog of Hamiltonian variational inference, the checks of options and latent
sites, and NUTS posteriors of one datapoint.

Everything here takes a log density as a callable of the latent state (the
traced log joint :func:`pyro_deepgen.infer.log_joint`, or AIS's tempered path),
so this package needs neither models nor objectives.

* :func:`hmc_transition`, :func:`hmc`: HMC (Neal, "MCMC using Hamiltonian
  dynamics", 2011, arXiv:1206.1901) with Pyro's ``velocity_verlet``, one
  accept/reject per chain;
* :func:`adapt_step_size`: Robbins-Monro adaptation toward a target acceptance;
* :func:`leapfrog`, :func:`grad_log_prob`: dynamics that gradients flow through
  (Salimans, Kingma & Welling 2015, arXiv:1410.6460);
* :func:`mcmc_posterior`: Pyro's NUTS (Hoffman & Gelman 2014, arXiv:1111.4246)
  on one datapoint, as ArviZ ``InferenceData``;
* :func:`check_counts`, :func:`check_step_size`, :func:`check_hmc_options`,
  :func:`check_continuous_site`, :func:`continuous_latent_sites`: clear errors.
"""

from pyro_deepgen.mcmc.adaptation import adapt_step_size
from pyro_deepgen.mcmc.checks import (check_continuous_site, check_counts, check_hmc_options,
                                      check_step_size, continuous_latent_sites)
from pyro_deepgen.mcmc.hmc import HMCStep, hmc, hmc_transition
from pyro_deepgen.mcmc.leapfrog import grad_log_prob, leapfrog
from pyro_deepgen.mcmc.nuts import mcmc_posterior

__all__ = [
    "HMCStep",
    "adapt_step_size",
    "check_continuous_site",
    "check_counts",
    "check_hmc_options",
    "check_step_size",
    "continuous_latent_sites",
    "grad_log_prob",
    "hmc",
    "hmc_transition",
    "leapfrog",
    "mcmc_posterior",
]
