r"""Step-size adaptation toward a target acceptance rate.

A Robbins-Monro recursion (Robbins & Monro, "A Stochastic Approximation
Method", 1951; for MCMC, Andrieu & Thoms, "A tutorial on adaptive MCMC", 2008)
on the log step size: a transition accepted more often than the target widens
the step, one accepted less often narrows it. AIS adapts its step sizes this way
(Wu, Burda, Salakhutdinov & Grosse, "On the Quantitative Analysis of
Decoder-Based Generative Models", 2017, arXiv:1611.04273), as do MCEM and the
MCMC-refined ELBO across training steps. A chain whose kernel adapts to its own
states is only asymptotically exact.
"""

from __future__ import annotations

import torch

__all__ = ["adapt_step_size", "MIN_STEP_SIZE", "MAX_STEP_SIZE"]

#: the smallest step size that adaptation gives
MIN_STEP_SIZE = 1e-8
#: the largest step size that adaptation gives
MAX_STEP_SIZE = 1e3


def adapt_step_size(step_size: torch.Tensor, accept_prob: torch.Tensor, target_accept: float,
                    rate: float = 0.05) -> torch.Tensor:
    r"""The next step sizes after a transition with acceptance probabilities
    ``accept_prob``:

    .. math:: \log \epsilon \leftarrow \log \epsilon + \gamma\,(\bar\alpha - \delta),

    with :math:`\gamma` = ``rate``, :math:`\delta` = ``target_accept`` and
    :math:`\bar\alpha` the acceptance probability of the chains that share the
    step size: ``accept_prob`` averaged over the dimensions along which
    ``step_size`` broadcasts to it (e.g. over the chains of ``(chains, datapoints)``
    probabilities for one step size per datapoint). The result is clamped to
    [``MIN_STEP_SIZE``, ``MAX_STEP_SIZE``] = [1e-8, 1e3].

    Example:
        >>> eps = torch.tensor([0.1, 0.1])
        >>> accept_prob = torch.tensor([[1.0, 0.0], [1.0, 0.2]])  # 2 chains x 2 datapoints
        >>> adapt_step_size(eps, accept_prob, target_accept=0.6, rate=1.0)
        tensor([0.1492, 0.0607])
    """
    shape = (1,) * (accept_prob.dim() - step_size.dim()) + step_size.shape
    shared = [d for d, (n, m) in enumerate(zip(accept_prob.shape, shape)) if m == 1 and n > 1]
    if shared:
        accept_prob = accept_prob.mean(shared, keepdim=True).reshape(step_size.shape)
    eps = step_size * torch.exp(rate * (accept_prob - target_accept))
    return eps.clamp(MIN_STEP_SIZE, MAX_STEP_SIZE)
