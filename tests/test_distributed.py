"""Data-parallel ``fit`` under torchrun: real 2-process gloo runs on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch
from torch.utils.data import TensorDataset

import distributed_worker as worker
from pyro_deepgen import distributed
from pyro_deepgen.cli import main
from pyro_deepgen.models import VAE
from pyro_deepgen.train import fit, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def torchrun(*args: str, nproc: int = 2, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_port()}", *args]
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_two_processes_give_the_one_process_gradients(tmp_path):
    run = torchrun(str(WORKER), "equivalence", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    two = torch.load(tmp_path / "2.pt", weights_only=True)
    pyro.clear_param_store()
    one = worker.equivalence(tmp_path)  # the same script in this one process
    for name in worker.EXACT:
        for s, (g1, g2) in enumerate(zip(one[name]["grads"], two[name]["grads"], strict=True)):
            assert sorted(g1) == sorted(g2)
            for p in g1:  # the sum of two half-batch gradients = the whole batch's
                torch.testing.assert_close(g2[p], g1[p], rtol=1e-4, atol=2e-5, msg=f"{name}, step {s}, {p}")
        for p, v in one[name]["params"].items():
            torch.testing.assert_close(two[name]["params"][p], v, rtol=1e-4, atol=1e-5)
    # every objective ran with check_sync_every=1: identical parameters on both processes
    # at every step, including those whose draws are not shared (wake-sleep, HMC)
    assert set(two) == set(worker.OBJECTIVES)
    assert two["mcem"]["chains"] == worker.ROWS  # each process saw half the rows; the chains merge


def test_killed_process_stops_the_others_and_the_run_resumes(tmp_path):
    crashed, whole, other_n = tmp_path / "crashed", tmp_path / "whole", tmp_path / "other_n"
    t0 = time.perf_counter()
    run = torchrun(str(WORKER), "crash", str(crashed), CRASH_AT_STEP="12", timeout=120)
    elapsed = time.perf_counter() - t0
    assert run.returncode != 0
    assert elapsed < 60
    # gloo sees the closed connection, or torchrun's SIGTERM comes first (then rank 0 may not
    # have started step 12 yet)
    assert re.search(r"rank 0: (lost contact with the other processes at step 12|stopped by SIGTERM "
                     r"at step 1[12]: the launcher stops every process when one fails)", run.stderr), \
        run.stderr[-3000:]
    assert f"The last checkpoint ({crashed / 'checkpoint.pt'}) is intact" in run.stderr
    ckpt = load_checkpoint(crashed / "checkpoint.pt")
    assert ckpt["step"] == 10 and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    shutil.copytree(crashed, other_n)

    resumed = torchrun(str(WORKER), "resume", str(crashed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished at step 150 in 2 processes" in resumed.stdout
    uninterrupted = torchrun(str(WORKER), "resume", str(whole))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    a, b = (torch.load(d / "final.pt", weights_only=True) for d in (crashed, whole))
    for name in a:  # each process resumes its own random stream: bit-identical
        assert torch.equal(a[name], b[name]), name

    single = subprocess.run([sys.executable, str(WORKER), "resume", str(other_n)], env=_env(),
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "finished at step 150 in 1 processes" in single.stdout
    history = load_checkpoint(other_n / "checkpoint.pt")["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["step"] == 150


def test_unresponsive_process_times_out(tmp_path):
    """Without a launcher to stop it, a process that stops answering is detected
    by the process group's timeout."""
    port = str(_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), "crash", str(tmp_path)], cwd=ROOT,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port, CRASH_AT_STEP="12",
                                       CRASH_SIGNAL="STOP", PYRO_DEEPGEN_DIST_TIMEOUT="5"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        t0 = time.perf_counter()
        _, err = procs[0].communicate(timeout=90)
        assert time.perf_counter() - t0 < 60
        assert procs[0].returncode != 0
        assert "rank 0: lost contact with the other processes at step 12" in err, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.communicate()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 10


def test_cli_train_under_torchrun(tmp_path):
    out = tmp_path / "run"
    run = torchrun("-m", "pyro_deepgen", "train", "--dataset", "digits", "--z-dim", "4", "--hidden", "32",
                   "--epochs", "2", "--batch-size", "64", "--checkpoint-every", "5",
                   "--check-sync-every", "3", "--quiet", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count('"train_loss"') == 1  # only rank 0 reports
    for name in ("run.json", "checkpoint.pt", "history.json", "model.pt", "model.json"):
        assert (out / name).exists(), name
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and [r["epoch"] for r in ckpt["history"]] == [1, 2]
    leftovers = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert not leftovers

    bad = torchrun("-m", "pyro_deepgen", "train", "--dataset", "digits", "--batch-size", "63", "--quiet",
                   "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0
    assert "batch_size=63 is the global batch, split evenly over the 2 processes; it must be a " \
           "multiple of 2" in bad.stderr


def test_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr("pyro_deepgen.train.init_distributed", lambda device, backend: 4)
    vae = VAE(x_dim=8, z_dim=2, hidden=(4,))
    x = torch.zeros(20, 8)
    with pytest.raises(ValueError, match=r"batch_size=10 is the global batch, split evenly over the 4 "
                                         r"processes; it must be a multiple of 4 \(e.g. 8\)"):
        fit(vae.model, vae.guide, TensorDataset(x), pyro.infer.Trace_ELBO(), batch_size=10, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_nccl_without_cuda():
    with pytest.raises(RuntimeError, match="backend 'nccl' needs CUDA GPUs, but torch.cuda.is_available"):
        distributed.init_distributed("cpu", "nccl")
    vae = VAE(x_dim=8, z_dim=2, hidden=(4,))
    with pytest.raises(RuntimeError, match="backend 'nccl' needs CUDA GPUs"):
        fit(vae.model, vae.guide, TensorDataset(torch.zeros(4, 8)), pyro.infer.Trace_ELBO(), backend="nccl",
            progress=False)


def test_nccl_needs_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="backend 'nccl' moves tensors between GPUs, but the device is cpu"):
        distributed.init_distributed("cpu", "nccl")


def test_bad_launch_environment(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'mpi'; valid: auto, gloo, nccl"):
        distributed.init_distributed("cpu", "mpi")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT not set: "
                                           "start the processes with torchrun"):
        distributed.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer; got 'two'"):
        distributed.init_distributed("cpu")


def test_only_train_runs_under_torchrun(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "evaluate runs in one process; only train runs under torchrun" in capsys.readouterr().err


def test_gradients_sum_unless_the_plate_is_subsampled():
    dp = distributed.DataParallel(torch.device("cpu"))
    args = (torch.zeros(4, worker.X_DIM), torch.arange(4))
    for subsample, how in ((False, "sum"), (True, "mean")):
        trace = pyro.poutine.trace(worker.TabledVAE(1, subsample=subsample).model).get_trace(*args)
        assert dp.reduction_for(trace) == how
