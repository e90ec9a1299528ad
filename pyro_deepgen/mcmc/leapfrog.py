r"""The gradient of a log density, and a leapfrog integrator that gradients can
flow through.

Pyro's own integrator (:func:`pyro.ops.integrator.velocity_verlet`, which
:func:`~pyro_deepgen.mcmc.hmc_transition` uses) computes the potential's
gradient without ``create_graph``, so no gradient flows through its
trajectories; :func:`leapfrog` is for the places where one must (Hamiltonian
variational inference: Salimans, Kingma & Welling, "Markov Chain Monte Carlo and
Variational Inference: Bridging the Gap", 2015, arXiv:1410.6460).
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch

from pyro_deepgen.mcmc.checks import check_counts

__all__ = ["grad_log_prob", "leapfrog"]


def grad_log_prob(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                  create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(fn(z), d fn(z) / dz)``: the log density per datapoint (every dimension
    of ``z`` but the last is a batch dimension) and its gradient
    :math:`\nabla_z \log p(z)`, which sums over datapoints that do not interact.

    With ``create_graph`` both stay differentiable (also with respect to
    parameters inside ``fn``), even when called under ``torch.no_grad``.
    Distribution validation is off, so that a diverging trajectory gives
    non-finite values for the caller to reject or report.

    Example:
        >>> lp, g = grad_log_prob(lambda z: -0.5 * z.pow(2).sum(-1), torch.tensor([[1.0, 2.0]]))
        >>> lp, g
        (tensor([-2.5000]), tensor([[-1., -2.]]))
    """
    with torch.enable_grad(), pyro.validation_enabled(False):
        x = z if (create_graph and z.requires_grad) else z.detach().requires_grad_()
        lp = fn(x)
        g, = torch.autograd.grad(lp.sum(), x, create_graph=create_graph)
    if not create_graph:
        lp = lp.detach()
    return lp, g


def leapfrog(z: torch.Tensor, v: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor],
             step_size: float | torch.Tensor, num_steps: int, create_graph: bool = True,
             grad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``num_steps`` leapfrog steps of Hamiltonian dynamics with potential
    :math:`-\log p` and unit mass (Neal, "MCMC using Hamiltonian dynamics", 2011,
    arXiv:1206.1901): per step, with :math:`\epsilon` the step size,

    .. math:: v \leftarrow v + \tfrac{\epsilon}{2} \nabla \log p(z), \quad
              z \leftarrow z + \epsilon v, \quad
              v \leftarrow v + \tfrac{\epsilon}{2} \nabla \log p(z).

    ``step_size`` may be a tensor (per dimension, or per datapoint), which keeps
    the map volume preserving and reversible with negated momentum. With
    ``create_graph`` the result is differentiable with respect to ``z``, ``v``,
    ``step_size`` and the parameters of ``log_prob`` (Hamiltonian variational
    inference, Salimans et al. 2015, arXiv:1410.6460).

    :param grad: :math:`\nabla_z \log p` at ``z`` if the caller has it (e.g. from the
        previous call), which saves one gradient evaluation.
    :returns: ``(z, v, grad)``: the new state and the gradient at the new ``z``, to pass
        to the next call.

    Example:
        >>> log_p = lambda z: -0.5 * z.pow(2).sum(-1)  # a standard normal
        >>> z, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> z1, v1, g1 = leapfrog(z, v, log_p, 0.1, 10, create_graph=False)
        >>> z2, v2, _ = leapfrog(z1, -v1, log_p, 0.1, 10, create_graph=False, grad=g1)
        >>> torch.allclose(z2, z, atol=1e-6), torch.allclose(-v2, v, atol=1e-6)  # reversible
        (True, True)
    """
    check_counts("leapfrog", num_steps=num_steps)
    g = grad_log_prob(log_prob, z, create_graph)[1] if grad is None else grad
    for _ in range(num_steps):
        v = v + 0.5 * step_size * g
        z = z + step_size * v
        _, g = grad_log_prob(log_prob, z, create_graph)
        v = v + 0.5 * step_size * g
    return z, v, g
