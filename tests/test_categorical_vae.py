import itertools
import math

import pyro
import pytest
import torch
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import log_likelihood
from training_checks import assert_training_improves
from pyro_deepgen.infer import RWS, VIMCO
from pyro_deepgen.models.categorical_vae import CategoricalVAE


def exact_log_px(vae: CategoricalVAE, x: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(vae.num_classes)
    codes = torch.stack([torch.stack([eye[i] for i in combo])
                         for combo in itertools.product(range(vae.num_classes), repeat=vae.num_vars)])
    log_prior = -vae.num_vars * math.log(vae.num_classes)
    probs_logits = vae.decoder(codes.flatten(-2))  # (n_codes, x_dim)
    log_lik = torch.distributions.Bernoulli(logits=probs_logits[:, None, :]).log_prob(x).sum(-1)
    return (torch.logsumexp(log_lik, 0) + log_prior).detach()


def test_log_likelihood_matches_enumeration():
    pyro.set_rng_seed(0)
    vae = CategoricalVAE(6, num_vars=2, num_classes=3, hidden=(8,))
    x = torch.bernoulli(torch.full((40, 6), 0.5))
    est = log_likelihood(vae.model, vae.guide, TensorDataset(x), num_samples=2000)
    diff = est - exact_log_px(vae, x)
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(diff.numel()) + 1e-3


@pytest.mark.parametrize("loss", [VIMCO(5), RWS(5)], ids=["vimco", "rws"])
def test_trains_with_discrete_objectives(loss):
    pyro.set_rng_seed(0)
    assert_training_improves(CategoricalVAE(16, num_vars=2, num_classes=4, hidden=(16,)), loss)


def test_shapes_and_errors():
    vae = CategoricalVAE(10, num_vars=3, num_classes=4, hidden=(8,))
    tr = pyro.poutine.trace(vae.guide).get_trace(torch.zeros(5, 10))
    z = tr.nodes["z"]["value"]
    assert z.shape == (5, 3, 4) and torch.equal(z.sum(-1), torch.ones(5, 3))
    assert vae.sample(7).shape == (7, 10)
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 10\); got \(5, 9\)"):
        vae.guide(torch.zeros(5, 9))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        CategoricalVAE(10, num_classes=1)
