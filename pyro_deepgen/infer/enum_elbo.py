r"""The ELBO with discrete latents summed out exactly, and a weight on chosen sites' KL.

Pyro's :class:`pyro.infer.TraceEnum_ELBO` sums over the values of every guide
site marked ``infer={"enumerate": "parallel"}`` instead of sampling it. That is
how the semi-supervised models of Kingma, Rezende, Mohamed & Welling,
"Semi-supervised Learning with Deep Generative Models", 2014, arXiv:1406.5298
(:class:`~pyro_deepgen.models.M2`, :class:`~pyro_deepgen.models.M1M2`) get
their unlabelled bound :math:`-\mathcal U(x)` exactly.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

from pyro.infer import TraceEnum_ELBO
from pyro.poutine.messenger import Messenger

__all__ = ["EnumELBO"]


class _SiteScale(Messenger):
    """Multiplies the log density of the named sites by their factor, in
    whichever program (model or guide) it wraps."""

    def __init__(self, scales: dict[str, float]):
        super().__init__()
        self.scales = scales

    def _process_message(self, msg: dict) -> None:
        if msg["name"] in self.scales:
            msg["scale"] = self.scales[msg["name"]] * msg["scale"]


class EnumELBO(TraceEnum_ELBO):
    r""":class:`pyro.infer.TraceEnum_ELBO` with ``max_plate_nesting=1`` (the
    pyro_deepgen convention), which trains :class:`~pyro_deepgen.models.M2` and
    :class:`~pyro_deepgen.models.M1M2` on labelled and unlabelled batches
    alike: it sums exactly over the guide's enumerated labels, and on a
    labelled batch (nothing to enumerate) it is the plain ELBO, without
    ``TraceEnum_ELBO``'s warning about that.

    ``kl_weights`` maps latent sites to a factor :math:`\beta` on their KL term:
    both ``log p`` and ``log q`` of such a site are multiplied by it, so the
    bound's :math:`\mathrm{KL}(q(z|x, y)\,\|\,p(z))` becomes
    :math:`\beta\,\mathrm{KL}` (Higgins et al., "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework", ICLR 2017). On M2's
    style latent (``{"z": beta}``, :attr:`pyro_deepgen.models.M2.style_site`)
    with :math:`\beta > 1` this makes the label, whose KL is at most
    :math:`\log K`, the cheaper carrier of the class. The loss is then no
    longer a bound on :math:`-\log p(x)`; evaluate with the model alone (e.g.
    :func:`pyro_deepgen.evaluate.elbo`), which never sees these weights.

    Example:
        >>> from pyro_deepgen.models import M2
        >>> m2 = M2(x_dim=4, y_dim=2, z_dim=1, hidden=(3,))
        >>> loss = EnumELBO().loss(m2.model, m2.guide, torch.ones(5, 4), torch.zeros(5, dtype=torch.long))
        >>> loss = EnumELBO(kl_weights={"z": 3.0}).loss(m2.model, m2.guide, torch.ones(5, 4))
    """

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1,
                 kl_weights: dict[str, float] | None = None, **kwargs: Any):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=kwargs.pop("vectorize_particles", True), **kwargs)
        kl_weights = dict(kl_weights or {})
        for site, w in kl_weights.items():
            if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
                raise ValueError(f"the KL weight of site {site!r} must be a finite number >= 0; got {w!r}")
        self.kl_weights = {k: float(w) for k, w in kl_weights.items() if w != 1}

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        if self.kl_weights:
            model, guide = _SiteScale(self.kl_weights)(model), _SiteScale(self.kl_weights)(guide)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
            trace_pair = super()._get_trace(model, guide, args, kwargs)
        if self.kl_weights:
            for trace in trace_pair:
                missing = set(self.kl_weights) - set(trace.nodes)
                if missing:
                    raise ValueError(f"kl_weights names sites that the model and guide lack: "
                                     f"{', '.join(sorted(missing))}")
        return trace_pair
