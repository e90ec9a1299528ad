"""Training throughput (images/s) of ``fit`` on 1 and 2 processes, launched with torchrun.

    python benchmarks/distributed.py [--batch-sizes 128,1024] [--epochs 3] [--device cpu]
        [--out docs/distributed_throughput.json]

The foundation VAE (784-200-200-50, tanh, Trace_ELBO, Adam) on the 50000 static binarized
MNIST training images (``PYRO_DEEPGEN_DATA`` or ../shared/data). Each configuration is
one ``torchrun --standalone`` launch of this script in ``--worker`` mode, which calls
``pyro_deepgen.train.fit`` for ``--epochs`` epochs; the throughput is 50000 images over
the median epoch time of the epochs after the first (warm-up). Configurations:
1 process with as many threads as cores, 1 process with 1 thread, N processes with
1 thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    import pyro
    import torch

    from pyro_deepgen.data import load_dataset
    from pyro_deepgen.distributed import rank, world_size
    from pyro_deepgen.infer import make_objective
    from pyro_deepgen.models import VAE
    from pyro_deepgen.train import fit

    data = load_dataset("binarized_mnist", split="train")
    pyro.set_rng_seed(0)
    vae = VAE(x_dim=784, z_dim=50, hidden=(200, 200), activation="tanh")
    history = fit(vae.model, vae.guide, data, make_objective("elbo"), epochs=args.epochs,
                  batch_size=args.batch_size, device=args.device, progress=False, seed=0)
    if rank() == 0:
        seconds = [r["seconds"] for r in history]
        Path(args.result).write_text(json.dumps({
            "processes": world_size(), "threads": torch.get_num_threads(), "rows": len(data),
            "epoch_seconds": seconds}))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, threads: int, batch_size: int, epochs: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", f"--master_port={_port()}", __file__, "--worker",
               "--batch-size", str(batch_size), "--epochs", str(epochs), "--device", device,
               "--result", str(result)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run(cmd, env=env, check=True, cwd=ROOT)
        r = json.loads(result.read_text())
    steady = statistics.median(r["epoch_seconds"][1:] or r["epoch_seconds"])
    return {**r, "batch_size": batch_size, "device": device, "images_per_second": r["rows"] / steady}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="128,1024")
    p.add_argument("--processes", type=int, default=2, help="the multi-process configuration")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the rows as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("PYRO_DEEPGEN_DATA", str(ROOT.parent / "shared" / "data"))
    if args.worker:
        worker(args)
        return
    cores = os.cpu_count() or 1
    configs = [(1, cores), (1, 1), (args.processes, max(1, cores // args.processes))]
    rows = []
    for b in (int(t) for t in args.batch_sizes.split(",")):
        base = None
        for n, threads in configs:
            r = launch(n, threads, b, args.epochs, args.device)
            base = base or r["images_per_second"]
            r["speedup"] = r["images_per_second"] / base
            rows.append(r)
            print(f"batch {b:5d}  {n} process(es) x {threads} thread(s): "
                  f"{r['images_per_second']:8.0f} images/s  ({r['speedup']:.2f}x)  "
                  f"epochs {', '.join(f'{s:.2f}' for s in r['epoch_seconds'])} s", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {cores} cores, device {args.device}")
    print("| batch | processes x threads | images/s | vs 1 process, all cores |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['processes']} x {r['threads']} | {r['images_per_second']:.0f} | "
              f"{r['speedup']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
