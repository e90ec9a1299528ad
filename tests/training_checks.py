"""A shared check that an objective trains a model/guide pair on four repeated patterns."""

import pyro
import torch
from pyro.infer import SVI
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import log_likelihood


def assert_training_improves(module, loss, x_dim: int = 16, gain: float = 1.0) -> None:
    """Eight epochs of mini-batch SVI raise the IWAE-50 log-likelihood by ``gain`` nats."""
    proto = torch.bernoulli(torch.full((4, x_dim), 0.5))
    data = proto[torch.randint(0, 4, (512,))]
    svi = SVI(module.model, module.guide, pyro.optim.Adam({"lr": 0.03}), loss)

    def ll():
        return log_likelihood(module.model, module.guide, TensorDataset(data[:128]), num_samples=50).mean()

    before = ll()
    for _ in range(8):
        for i in range(0, 512, 64):
            svi.step(data[i:i + 64])
    after = ll()
    assert after > before + gain, (before, after)
