"""IWAE-k evaluation of a trained run on its test split: time, memory, and
achieved GFLOP/s against plain ``torch.mm`` throughput measured in the same run.

    python benchmarks/evaluate_speed.py RUN_DIR --num-samples 5000

It calls the one evaluation path (``pyro_deepgen.experiment.evaluate_run``).
FLOPs counted: the matmuls of the decoder for every (particle, datapoint) pair
and of the encoder for every datapoint (2 * in * out each); the elementwise
work is not counted.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from pyro_deepgen.experiment import evaluate_run, load_run_config
from pyro_deepgen.models import load_model


def linear_flops(module: torch.nn.Module) -> int:
    return sum(2 * m.in_features * m.out_features for m in module.modules()
               if isinstance(m, torch.nn.Linear))


def mm_gflops(module: torch.nn.Module, rows: int, repeats: int = 5) -> float:
    """Throughput of ``torch.addmm`` over the decoder's layer shapes at ``rows`` rows."""
    layers = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    mats = [(torch.randn(rows, m.in_features), m.weight.detach().T.contiguous(), m.bias.detach())
            for m in layers]
    for a, w, b in mats:
        torch.addmm(b, a, w)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for a, w, b in mats:
            torch.addmm(b, a, w)
        best = min(best, time.perf_counter() - t)
    return rows * linear_flops(module) / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args()
    cfg = load_run_config(args.run)
    module = load_model(args.run)
    rows = 65536  # the evaluator's default chunk (particles x datapoints)
    mm_before = mm_gflops(module.decoder, rows)
    result = evaluate_run(args.run, num_samples=args.num_samples, batch_size=args.batch_size,
                          limit=args.limit)
    mm_after = mm_gflops(module.decoder, rows)
    n, k = result["num_datapoints"], args.num_samples
    flops = n * k * linear_flops(module.decoder) + n * linear_flops(module.encoder)
    achieved = flops / result["seconds"] / 1e9
    mm = max(mm_before, mm_after)
    report = {
        **result, "dataset": cfg.dataset, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "matmul_gflop": flops / 1e9, "achieved_gflops": achieved, "torch_mm_gflops": mm,
        "fraction_of_mm": achieved / mm,
    }
    Path(args.run, "evaluate_speed.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
