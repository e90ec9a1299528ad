"""A ``fit`` script for tests/test_distributed.py, run under ``torchrun``.

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_worker.py MODE OUT

``equivalence``: for several objectives, a few ``fit`` steps of a small VAE
whose guide draws its noise from a fixed table indexed by (particle, row), so
that one process and N processes see the same draws; rank 0 saves every
step's combined gradients and the final parameters to ``OUT/<world>.pt``.

``crash``: trains with checkpoints; at step ``$CRASH_AT_STEP`` rank 1 kills
itself, or with ``CRASH_SIGNAL=STOP`` stops answering. ``resume``: the same run, continued from its checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import ELBO
from torch import nn
from torch.utils.data import TensorDataset

from pyro_deepgen.distributed import rank, shutdown, world_size
from pyro_deepgen.infer import Objective, make_objective
from pyro_deepgen.train import fit

X_DIM, Z_DIM, ROWS, K = 12, 3, 32, 4
OBJECTIVES = ("elbo", "iwae-4", "iwae-dreg-4", "rws-4", "vimco-4", "nvil", "reinforce", "wake-sleep",
              "elbo-subsampled", "mcem", "mcmc-refined")
#: objectives whose gradients depend only on the tabled draws at every step; wake-sleep's
#: sleep phase and the HMC of MCEM and mcmc-refined draw from the running random state:
#: those are only checked to stay in sync
EXACT = ("elbo", "iwae-4", "iwae-dreg-4", "rws-4", "vimco-4", "reinforce", "nvil", "elbo-subsampled")


class TableNormal(dist.Normal):
    """A Normal whose draws are ``loc + scale * eps`` for a given ``eps``."""

    def __init__(self, loc, scale, eps, validate_args=None):
        self.eps = eps
        super().__init__(loc, scale, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return TableNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape),
                           self.eps.expand(batch_shape))

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return self.loc.expand(shape) + self.scale.expand(shape) * self.eps.expand(shape)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)


class TabledVAE(nn.Module):
    """A VAE following the pyro_deepgen convention; ``ids`` pick the guide's noise."""

    def __init__(self, particles: int, subsample: bool = False):
        super().__init__()
        self.subsample = subsample  # a data plate scaled to the whole data set
        torch.manual_seed(rank() + 100)  # processes start from different networks: fit broadcasts
        self.enc = nn.Sequential(nn.Linear(X_DIM, 16), nn.Tanh(), nn.Linear(16, 2 * Z_DIM))
        self.dec = nn.Sequential(nn.Linear(Z_DIM, 16), nn.Tanh(), nn.Linear(16, X_DIM))
        self.noise = torch.randn(particles, ROWS, Z_DIM, generator=torch.Generator().manual_seed(7))

    def plate(self, ids):
        return pyro.plate("data", ROWS, subsample=ids) if self.subsample else pyro.plate("data", len(ids))

    def model(self, x, ids):
        pyro.module("dec", self.dec)
        with self.plate(ids):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x, ids):
        pyro.module("enc", self.enc)
        loc, log_scale = self.enc(x).chunk(2, -1)
        k = self.noise.shape[0]
        eps = self.noise[:, ids]
        shape = (k, len(x), Z_DIM)
        with self.plate(ids):
            pyro.sample("z", TableNormal(loc.expand(shape), log_scale.exp().expand(shape), eps).to_event(1))


class Recording(pyro.optim.PyroOptim):
    """Adam that keeps a copy of the gradients it is given at each step."""

    def __init__(self, options: dict):
        super().__init__(torch.optim.Adam, options)
        self.grads: list[dict[str, torch.Tensor]] = []

    def __call__(self, params, *args, **kwargs):
        store = pyro.get_param_store()
        self.grads.append({store.param_name(p): p.grad.detach().clone() for p in params})
        return super().__call__(params, *args, **kwargs)


def data() -> TensorDataset:
    x = (torch.rand(ROWS, X_DIM, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    return TensorDataset(x, torch.arange(ROWS))


def equivalence(out: Path, batch_size: int = 8) -> dict:
    result = {}
    for name in OBJECTIVES:
        pyro.clear_param_store()
        loss: ELBO = make_objective(name.replace("-subsampled", ""))
        if isinstance(loss, Objective):  # the guide writes the particle dim itself: no guessing
            loss.max_plate_nesting = 1
        k = getattr(loss, "num_particles", 1)
        vae = TabledVAE(k, subsample=name.endswith("-subsampled"))
        if name == "nvil":  # its baseline network, made here rather than from the running random state
            torch.manual_seed(5)
            loss.baseline_net = nn.Sequential(nn.Linear(X_DIM, 8), nn.Tanh(), nn.Linear(8, 1))
        optim = Recording({"lr": 0.01})
        fit(vae.model, vae.guide, data(), loss, epochs=1, batch_size=batch_size, optim=optim, seed=1,
            pass_labels=True, progress=False, check_sync_every=1)
        assert len(optim.grads) == ROWS // batch_size
        params = {n: p.detach().clone() for n, p in pyro.get_param_store().named_parameters()}
        result[name] = {"grads": optim.grads, "params": params,
                        "chains": len(getattr(loss, "chains", {}))}
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(result, out / f"{world_size()}.pt")
    return result


class CrashAt(pyro.infer.Trace_ELBO):
    """Trace_ELBO; the process of rank 1 kills itself (``$CRASH_SIGNAL`` KILL) or
    stops answering (STOP) at a given step."""

    def __init__(self, step: int):
        super().__init__()
        self.at, self.calls = step, 0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.calls += 1
        if rank() == 1 and self.calls == self.at:
            os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("CRASH_SIGNAL", "KILL")))
        return super().loss_and_grads(model, guide, *args, **kwargs)


def crash_or_resume(out: Path, crash_at: int) -> None:
    from pyro_deepgen.models import VAE

    pyro.clear_param_store()
    pyro.set_rng_seed(rank())  # different networks on each process: fit gives them rank 0's
    vae = VAE(x_dim=X_DIM, z_dim=2, hidden=(8,))
    x = (torch.rand(400, X_DIM, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    history = fit(vae.model, vae.guide, TensorDataset(x), CrashAt(crash_at), epochs=3, batch_size=8,
                  out=out, checkpoint_every=5, progress=False)
    if rank() == 0:
        torch.save({n: p.detach() for n, p in pyro.get_param_store().named_parameters()}, out / "final.pt")
        print(f"finished at step {history[-1]['step']} in {world_size()} processes", flush=True)


if __name__ == "__main__":
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "equivalence":
        equivalence(target)
    elif mode in ("crash", "resume"):
        crash_or_resume(target, int(os.environ.get("CRASH_AT_STEP", "0")))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as python -m pyro_deepgen does: the interpreter's teardown can abort (torch 2.13)
