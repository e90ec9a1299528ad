r"""Monte Carlo EM with persistent HMC chains per datapoint."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_deepgen.infer.log_joint import check_vector_site, log_joint
from pyro_deepgen.infer.objective import Exchange, Objective, Terms
from pyro_deepgen.infer.weights import find_data_plate, unit_inputs
from pyro_deepgen.mcmc import check_hmc_options, hmc

__all__ = ["MCEM"]


def _row_keys(x: torch.Tensor) -> list[int]:
    """A stable 64-bit key per row of ``x`` (the same across processes, for resuming)."""
    rows = x.detach().reshape(x.shape[0], -1).cpu().contiguous().numpy()
    return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little", signed=True)
            for r in rows]


class MCEM(Objective):
    r"""Monte Carlo EM: the E-step samples :math:`p_\theta(z|x)` by HMC, the M-step is
    a gradient step on :math:`\sum_b \log p_\theta(x_b, z_b)` over the batch at the
    chains' states (Dempster, Laird & Rubin 1977; Wei & Tanner 1990; the baseline of Kingma &
    Welling, "Auto-Encoding Variational Bayes", 2014, arXiv:1312.6114).

    Each datapoint keeps a persistent chain, keyed by its content (its values of
    the model's observed sites in the data plate), that starts from
    the prior and makes ``num_steps`` HMC transitions (:func:`pyro_deepgen.mcmc.hmc`,
    with Pyro's ``velocity_verlet``, one accept/reject per datapoint)
    each time the datapoint is in a batch. The step size adapts toward
    ``target_accept``; chains and step size are kept in :meth:`get_state`.

    With ``train_guide`` the guide is trained by the ELBO alongside, only to report a
    bound (and to evaluate by IWAE); it does not move the model or the chains. Without
    it the guide is not run and the reported loss is :math:`-\sum_b \log p(x_b, z_b)`.

    :param num_steps: HMC transitions per datapoint per training step.
    :param num_leapfrog: leapfrog steps per transition.
    :param step_size: the initial step size.
    :param target_accept: the acceptance rate the step size adapts toward
        (Kingma & Welling used 0.9).
    :param train_guide: train the guide by the ELBO, for a bound.
    :param site: the model's latent site: continuous, unconstrained, the only
        latent, of shape ``(batch, dim)`` under the data plate (other models get an
        error that names the site).
    :param options: Pyro's ``ELBO`` options and ``data_plate`` (see
        :class:`~pyro_deepgen.infer.Objective`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_deepgen.models import VAE
        >>> vae = VAE(x_dim=64, z_dim=2, hidden=(32,))
        >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), MCEM(num_steps=2))
        >>> loss = svi.step(torch.bernoulli(torch.full((8, 64), 0.5)))
    """

    joint = False

    def __init__(self, num_steps: int = 10, num_leapfrog: int = 10, step_size: float = 0.05,
                 target_accept: float = 0.9, train_guide: bool = True, site: str = "z",
                 **options: Any):
        check_hmc_options("MCEM", num_steps, num_leapfrog, step_size, target_accept)
        super().__init__(1, **options)
        self.num_steps, self.num_leapfrog, self.site = num_steps, num_leapfrog, site
        self.step_size, self.target_accept, self.train_guide = float(step_size), target_accept, train_guide
        self.needs_reparam = train_guide
        self.chains: dict[int, torch.Tensor] = {}
        #: the mean acceptance probability of the last step's chains
        self.accept_prob = math.nan

    def get_state(self) -> dict[str, Any]:
        keys = list(self.chains)
        values = torch.stack([self.chains[k] for k in keys]) if keys else torch.zeros(0)
        return {**super().get_state(), "step_size": self.step_size,
                "chain_keys": torch.tensor(keys, dtype=torch.int64), "chain_values": values}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.step_size = state.get("step_size", self.step_size)
        keys = state.get("chain_keys")
        if keys is not None:
            self.chains = dict(zip(keys.tolist(), state["chain_values"]))

    def sync_state(self, reduce_sum: Callable[[list[float]], list[float]]) -> None:
        total, count = reduce_sum([self.step_size, 1.0])  # the chains merge at epoch ends, by row
        self.step_size = total / count

    def merge_rows(self, exchange: Exchange) -> None:
        """Every process's chains, by datapoint key, so that a row finds its chain
        whichever process reads it next (data-parallel training)."""
        keys = torch.tensor(list(self.chains), dtype=torch.int64)
        values = (torch.stack([v.reshape(-1).float() for v in self.chains.values()]) if self.chains
                  else torch.zeros(0, 0))
        all_keys, all_values = exchange(keys, values)
        for key, value in zip(all_keys.tolist(), all_values):
            self.chains[key] = value.clone()

    def _start(self, model: Callable, args: tuple, kwargs: dict) -> tuple[torch.Tensor, list[int]]:
        """The chains' states for this batch (stored ones, prior draws for new
        datapoints) and the datapoints' keys."""
        with poutine.block(hide_types=["sample"]):  # params stay visible to SVI
            prior = prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
        if self.site not in prior.nodes:
            raise ValueError(f"MCEM samples the latent site site={self.site!r}, which the model lacks; "
                             "pass site='<name>'")
        check_vector_site(prior.nodes[self.site], "MCEM")
        frame = find_data_plate(prior, self.data_plate)
        if frame is None:
            raise ValueError("MCEM keeps one chain per datapoint, keyed by its data, and needs a "
                             "vectorized data plate that every observed site sits in, e.g. "
                             "`with pyro.plate('data', batch_size):` (or data_plate='name')")
        keys = _row_keys(unit_inputs(prior, frame))
        z = prior.nodes[self.site]["value"].detach()
        if z.dim() != 2 or z.shape[0] != len(keys):
            raise ValueError(f"MCEM needs the latent site {self.site!r} of shape (batch, dim) under "
                             f"the data plate; got {tuple(z.shape)}")
        for i, k in enumerate(keys):
            stored = self.chains.get(k)
            if stored is not None:
                z[i] = stored.to(z.device)
        return z, keys

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Terms:
        if self.train_guide:
            w = self._weights(model, guide, args, kwargs, vectorize=True)
            elbo = w.log_w.mean(0).sum() * w.scale
        else:
            w = None
        log_p = log_joint(model, args, kwargs, self.site, owner="MCEM")
        if not torch.is_grad_enabled():
            if w is not None:
                return Terms(bound=elbo, surrogate=elbo, weights=w)
            lp = log_p(self._start(model, args, kwargs)[0]).sum()
            return Terms(bound=lp, surrogate=lp)
        z, keys = self._start(model, args, kwargs)
        z, eps, accept = hmc(z, log_p, self.step_size, self.num_steps, self.num_leapfrog,
                             self.target_accept)
        self.step_size = float(eps.log().mean().exp())
        self.accept_prob = float(accept.mean())
        for k, zi in zip(keys, z.detach().cpu()):
            self.chains[k] = zi
        complete = log_p(z).sum()
        if w is None:
            return Terms(bound=complete.detach(), surrogate=complete)
        scale = w.scale
        return Terms(bound=elbo, model_surrogate=complete * scale, guide_surrogate=elbo, weights=w)
