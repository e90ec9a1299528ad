import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_deepgen.data import load_dataset
from pyro_deepgen.models import VAE
from pyro_deepgen.train import CHECKPOINT, fit, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}


def _train(out=None, seed=0, epochs=3, loss=None, **kw):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(64, z_dim=4, hidden=(32,))
    data = load_dataset("digits", "train", binarize="dynamic")
    hist = fit(vae.model, vae.guide, data, loss or Trace_ELBO(), epochs=epochs, batch_size=64, seed=seed,
               out=out, progress=False, **kw)
    return hist, _params()


def test_same_seed_same_parameters_and_different_seed_differs():
    _, a = _train(seed=1)
    _, b = _train(seed=1)
    _, c = _train(seed=2)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_history_and_checkpoint_files(tmp_path):
    val = load_dataset("digits", "valid", binarize="static")
    hist, params = _train(out=tmp_path, val_dataset=val)
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_elbo"]) for r in hist)
    assert json.loads((tmp_path / "history.json").read_text()) == hist
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,step,train_loss")
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)  # weights_only load
    assert ckpt["epoch"] == 3 and ckpt["batch"] == 0 and ckpt["step"] == 3 * 21
    assert all(torch.equal(ckpt["params"][k], params[k]) for k in params)
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("objective", ["elbo", "nvil", "rws-3"])
def test_resume_in_process_is_bit_identical(tmp_path, objective):
    """Also for objectives with their own parameters and running state (NVIL's
    baseline network and averages) and with separate model/guide gradients (RWS)."""
    from pyro_deepgen.infer import make_objective

    _, full = _train(epochs=4, checkpoint_every=10, loss=make_objective(objective))
    _train(out=tmp_path, epochs=2, checkpoint_every=10, loss=make_objective(objective))
    hist, resumed = _train(out=tmp_path, epochs=4, checkpoint_every=10, loss=make_objective(objective))
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    assert all(torch.equal(full[k], resumed[k]) for k in full)


SCRIPT = textwrap.dedent("""
    import sys, pyro, torch
    from pyro.infer import Trace_ELBO
    from pyro_deepgen.data import load_dataset
    from pyro_deepgen.models import VAE
    from pyro_deepgen.train import fit
    out = sys.argv[1]
    pyro.set_rng_seed(0)
    vae = VAE(64, z_dim=4, hidden=(32,))
    data = load_dataset("digits", "train", binarize="dynamic")
    fit(vae.model, vae.guide, data, Trace_ELBO(), epochs=int(sys.argv[2]), batch_size=64, seed=0,
        out=out, checkpoint_every=7, progress=False)
    torch.save({k: v.detach() for k, v in pyro.get_param_store().named_parameters()}, out + "/final.pt")
""")


def test_killed_subprocess_resumes_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    epochs = 40
    ref, run = tmp_path / "ref", tmp_path / "run"
    subprocess.run([sys.executable, str(script), str(ref), str(epochs)], env=env, check=True, timeout=300)

    proc = subprocess.Popen([sys.executable, str(script), str(run), str(epochs)], env=env)
    ckpt_path = run / CHECKPOINT
    deadline = time.time() + 120
    while not ckpt_path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = load_checkpoint(ckpt_path)
    assert 0 < killed_at["step"] < epochs * 21
    assert not (run / "final.pt").exists()

    subprocess.run([sys.executable, str(script), str(run), str(epochs)], env=env, check=True, timeout=300)
    a = torch.load(ref / "final.pt", weights_only=True)
    b = torch.load(run / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def model(x):
        calls["n"] += 1
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x * math.inf if calls["n"] == 7 else x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, 0.7))

    data = TensorDataset(torch.randn(40))
    with pytest.raises(FloatingPointError, match=r"loss is inf at step 7 \(epoch 2, batch 3\)"):
        fit(model, guide, data, Trace_ELBO(), epochs=5, batch_size=10, out=tmp_path,
            checkpoint_every=5, progress=False)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["step"] == 5
    assert torch.isfinite(ckpt["params"]["loc"])


def test_early_stopping_restores_best_parameters(tmp_path):
    val = load_dataset("digits", "valid", binarize="static")
    pyro.set_rng_seed(0)
    vae = VAE(64, z_dim=4, hidden=(32,))
    data = load_dataset("digits", "train", binarize="dynamic")
    hist = fit(vae.model, vae.guide, data, Trace_ELBO(), epochs=30, batch_size=64, lr=0.05,
               val_dataset=val, patience=2, out=tmp_path, progress=False)
    vals = [r["val_elbo"] for r in hist]
    best = max(range(len(vals)), key=vals.__getitem__)
    assert len(hist) == best + 3  # stopped two epochs after the best
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    now = _params()
    assert all(torch.equal(saved[k], now[k]) for k in saved)
    # fitting again resumes a run that has stopped: no more epochs, the best parameters again
    pyro.clear_param_store()
    again = fit(vae.model, vae.guide, data, Trace_ELBO(), epochs=30, batch_size=64, lr=0.05,
                val_dataset=val, patience=2, out=tmp_path, progress=False)
    assert again == hist
    assert all(torch.equal(saved[k], v) for k, v in _params().items())


def test_bad_arguments():
    vae = VAE(64, z_dim=2, hidden=(8,))
    data = TensorDataset(torch.zeros(10, 64))
    with pytest.raises(ValueError, match="early stopping \\(patience\\) needs a val_dataset"):
        fit(vae.model, vae.guide, data, Trace_ELBO(), patience=3)
    with pytest.raises(ValueError, match="the training dataset is empty"):
        fit(vae.model, vae.guide, TensorDataset(torch.zeros(0, 64)), Trace_ELBO())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch.cuda.is_available\\(\\) is False"):
            fit(vae.model, vae.guide, data, Trace_ELBO(), device="cuda")


def test_max_time_budget_stops_early():
    hist, _ = _train(epochs=1000, max_time=0.5)
    assert len(hist) < 1000
    assert hist[-1]["complete"] is False


def test_compiled_fit_trains_to_the_same_parameters():
    """``compile="fx"`` runs the traced program, which draws what the general path
    draws: the same seed gives the same parameters, and the compile time is recorded."""
    from pyro_deepgen.infer import IWAE

    hist, general = _train(epochs=2, loss=IWAE(num_particles=3))
    hist_c, compiled = _train(epochs=2, loss=IWAE(num_particles=3), compile="fx")
    assert general.keys() == compiled.keys()
    for k in general:
        torch.testing.assert_close(compiled[k], general[k], rtol=1e-4, atol=1e-5)
    assert "compile_seconds" not in hist[-1] and hist_c[-1]["compile_seconds"] > 0
    assert hist_c[-1]["train_loss"] == pytest.approx(hist[-1]["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="unknown backend 'jit'"):
        _train(epochs=1, compile="jit")
