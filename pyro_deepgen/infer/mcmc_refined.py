r"""An ELBO-trained guide whose samples are refined by HMC before they train the model."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from pyro_deepgen.infer.log_joint import check_vector_site, log_joint
from pyro_deepgen.infer.objective import Objective, Terms
from pyro_deepgen.mcmc import check_hmc_options, hmc

__all__ = ["MCMCRefinedELBO"]


class MCMCRefinedELBO(Objective):
    r"""The guide follows the ELBO; the model follows
    :math:`\nabla_\theta \log p_\theta(x, z_M)`, where :math:`z_M` is the guide's
    sample :math:`z_0 \sim q(z|x)` after ``num_steps`` HMC transitions targeting
    :math:`p_\theta(z|x)`, one accept/reject per datapoint.

    Hoffman, "Learning Deep Latent Gaussian Models with Markov Chain Monte Carlo",
    ICML 2017 (proceedings.mlr.press/v70/hoffman17a).

    The chains are :func:`pyro_deepgen.mcmc.hmc`'s, with Pyro's ``velocity_verlet`` (no
    gradient flows through them); the step size adapts toward ``target_accept`` across
    steps and is kept in :meth:`get_state`. The reported loss is the negative ELBO.
    The latent site must be reparameterized, continuous, unconstrained and the
    model's only latent; other models get an error that names the site.

    :param num_steps: HMC transitions per training step.
    :param num_leapfrog: leapfrog steps per transition.
    :param step_size: the initial step size.
    :param target_accept: the acceptance rate the step size adapts toward.
    :param site: the latent site.
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), MCMCRefinedELBO(num_steps=2))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    needs_reparam = True
    joint = False

    def __init__(self, num_steps: int = 5, num_leapfrog: int = 5, step_size: float = 0.1,
                 target_accept: float = 0.8, num_particles: int = 1, site: str = "z",
                 **options: Any):
        check_hmc_options(type(self).__name__, num_steps, num_leapfrog, step_size, target_accept)
        super().__init__(num_particles, **options)
        self.num_steps, self.num_leapfrog, self.site = num_steps, num_leapfrog, site
        self.step_size, self.target_accept = float(step_size), target_accept
        #: the mean acceptance probability of the last step's chains
        self.accept_prob = math.nan

    def sync_state(self, reduce_sum: Callable[[list[float]], list[float]]) -> None:
        total, count = reduce_sum([self.step_size, 1.0])
        self.step_size = total / count

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "step_size": self.step_size}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.step_size = state.get("step_size", self.step_size)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        w = self._weights(model, guide, args, kwargs, vectorize=True)
        if self.site not in w.guide_trace.nodes:
            raise ValueError(f"{type(self).__name__} refines the latent site site={self.site!r}, which the "
                             "guide lacks; pass site='<name>'")
        check_vector_site(w.guide_trace.nodes[self.site], type(self).__name__)
        elbo = w.log_w.mean(0)
        bound = elbo.sum() * w.scale
        if not torch.is_grad_enabled():
            return Terms(bound=bound, surrogate=bound, weights=w)
        log_p = log_joint(model, args, kwargs, self.site, owner=type(self).__name__)
        z0 = w.guide_trace.nodes[self.site]["value"].detach()
        z, eps, accept = hmc(z0, log_p, self.step_size, self.num_steps, self.num_leapfrog,
                             self.target_accept)
        self.step_size = float(eps.log().mean().exp())
        self.accept_prob = float(accept.mean())
        model_sur = log_p(z).reshape(w.num_particles, -1).mean(0).sum() * w.scale
        return Terms(bound=bound, model_surrogate=model_sur, guide_surrogate=bound, weights=w)
