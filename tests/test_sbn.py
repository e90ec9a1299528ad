import itertools
import math

import pyro
import pytest
import torch
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import log_likelihood
from training_checks import assert_training_improves
from pyro_deepgen.infer import NVIL, RWS, VIMCO, IWAE, Reinforce, WakeSleep
from pyro_deepgen.models.sbn import SigmoidBeliefNet


def exact_log_px(sbn: SigmoidBeliefNet, x: torch.Tensor) -> torch.Tensor:
    """Enumerates every configuration of a 2-layer SBN."""
    l1, l2 = sbn.layers
    h1 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=l1)))
    h2 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=l2)))
    g = sbn.generative
    log_p2 = torch.distributions.Bernoulli(logits=g["prior"][0]).log_prob(h2).sum(-1)  # (n2,)
    log_p1 = torch.distributions.Bernoulli(logits=g["down"][1](h2)[:, None, :]).log_prob(h1).sum(-1)  # (n2, n1)
    log_px = torch.distributions.Bernoulli(logits=g["down"][0](h1)[:, None, :]).log_prob(x).sum(-1)  # (n1, N)
    joint = log_p2[:, None, None] + log_p1[:, :, None] + log_px[None]
    return torch.logsumexp(joint.reshape(-1, x.shape[0]), 0).detach()


def test_log_likelihood_matches_enumeration():
    pyro.set_rng_seed(0)
    sbn = SigmoidBeliefNet(5, layers=(3, 2))
    x = torch.bernoulli(torch.full((40, 5), 0.4))
    est = log_likelihood(sbn.model, sbn.guide, TensorDataset(x), num_samples=3000)
    diff = est - exact_log_px(sbn, x)
    se = diff.std() / math.sqrt(diff.numel())
    assert diff.mean().abs() < 4 * se + 1e-3, (diff.mean(), se)


def test_sites_and_shapes():
    sbn = SigmoidBeliefNet(6, layers=(4, 3, 2))
    tr = pyro.poutine.trace(sbn.guide).get_trace(torch.zeros(7, 6))
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"] == ["z", "z2", "z3"]
    assert tr.nodes["z3"]["value"].shape == (7, 2)
    assert sbn.sample(5).shape == (5, 6)
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 6\); got \(7, 5\)"):
        sbn.model(torch.zeros(7, 5))
    with pytest.raises(ValueError, match="layers of size >= 1"):
        SigmoidBeliefNet(6, layers=())


@pytest.mark.parametrize("loss", [Reinforce(baseline="average"), NVIL(), VIMCO(4), RWS(4), WakeSleep(),
                                  IWAE(4)], ids=["reinforce", "nvil", "vimco", "rws", "wake-sleep", "iwae"])
def test_objectives_train_an_sbn(loss):
    pyro.set_rng_seed(0)
    assert_training_improves(SigmoidBeliefNet(16, layers=(8,)), loss)
