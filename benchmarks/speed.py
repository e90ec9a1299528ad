"""Milliseconds per training step of a 784-400-50 VAE (tanh, Bernoulli decoder), Adam,
on MNIST-shaped binary data: hand-written PyTorch (eager and ``torch.compile``),
Pyro's general path, and :class:`pyro_deepgen.infer.Compiled`, all in one run;
then the IWAE-5000 evaluation throughput against ``torch.addmm`` at the same shapes.

    python benchmarks/speed.py [--device cpu|cuda] [--quick] [--batch-sizes 128,1024]
        [--rounds 5] [--steps 6] [--eval-images 10000] [--out speed.json]

Training: for each batch size and objective (ELBO, IWAE k=50, DReG k=50) every
configuration is built from the same initial weights, warmed up (compiling
happens here and is reported as its compile time), then the configurations take
turns: ``--rounds`` rounds of ``--steps`` steps each, every step timed with
``time.perf_counter`` (after a device synchronization on CUDA). Reported: the
median over all timed steps, the interquartile range, and the ratios of medians
to the hand-written eager and hand-written compiled loops (both with
``torch.optim.Adam``'s default implementation). Our rows run what ``fit(compile=...)``
runs: ``SVI`` with :class:`~pyro_deepgen.infer.Compiled` and ``fit``'s optimizer,
:func:`pyro_deepgen.train.default_optim` (fused Adam); the row "hand-written eager,
fused Adam" shows how much of the difference is the optimizer. Peak memory is taken
on one extra step: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the
largest total of live tensor memory in the profiler's allocation events.

Evaluation (``--eval-images`` > 0): ``log_likelihood`` with 5000 particles over
the binarized MNIST test images (``PYRO_DEEPGEN_DATA`` or ../shared/data; random
binary images where the files are missing), general and ``compiled=True``, on the
784-200-200-50 VAE of docs/benchmarks.md, with matmul throughput measured before
and after at the decoder's shapes (the best of both).
"""

from __future__ import annotations

import argparse
import json
import warnings
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import pyro
import torch
import torch._functorch.config
from pyro.infer import SVI, JitTrace_ELBO, RenyiELBO, Trace_ELBO
from torch.nn.functional import softplus
from torch.utils.data import TensorDataset

from pyro_deepgen.evaluate import log_likelihood
from pyro_deepgen.infer import IWAE, Compiled
from pyro_deepgen.models import VAE
from pyro_deepgen.train import default_optim

DATA = os.environ.get("PYRO_DEEPGEN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
K = 50


# ----------------------------------------------------------------------------- hand-written


def hand_terms(vae: VAE, x: torch.Tensor, k: int, kind: str):
    """The objective written by hand: ``kind`` "elbo" (one particle), "iwae" or "dreg"."""
    loc, scale = vae.encoder(x)
    shape = loc.shape if kind == "elbo" else (k,) + loc.shape
    z = loc + scale * torch.randn(shape, device=x.device, dtype=x.dtype)
    logits = vae.decoder(z)
    log_px = (x * logits).sum(-1) - softplus(logits).sum(-1)
    log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
    if kind == "dreg":  # the guide's parameters only through z
        loc, scale = loc.detach(), scale.detach()
    log_qz = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - HALF_LOG_2PI).sum(-1)
    log_w = log_px + log_pz - log_qz
    if kind == "elbo":
        return -log_w.sum()
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    if kind == "iwae":
        return -bound.sum()
    weights = torch.softmax(log_w.detach(), 0)
    return -bound.sum(), -(weights.pow(2) * log_w).sum()  # model loss, guide loss


def hand_step(vae: VAE, kind: str, compiled: bool, fused: bool = False) -> Callable[[torch.Tensor], float]:
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=fused or None)
    terms = torch.compile(hand_terms, dynamic=False) if compiled else hand_terms
    enc, dec = list(vae.encoder.parameters()), list(vae.decoder.parameters())

    def step(x: torch.Tensor) -> float:
        opt.zero_grad()
        if kind == "dreg":
            model_loss, guide_loss = terms(vae, x, K, kind)
            for p, g in zip(enc, torch.autograd.grad(guide_loss, enc, retain_graph=True)):
                p.grad = g
            for p, g in zip(dec, torch.autograd.grad(model_loss, dec)):
                p.grad = g
            loss = model_loss
        else:
            loss = terms(vae, x, K, kind)
            loss.backward()
        opt.step()
        return loss.item()
    return step


def svi_step(vae: VAE, loss, optim=None) -> Callable[[torch.Tensor], float]:
    svi = SVI(vae.model, vae.guide, optim or pyro.optim.Adam({"lr": 1e-3}), loss)
    return svi.step


# ----------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(step: Callable, x: torch.Tensor) -> float:
    """MB of tensor memory at the peak of one step, above what was live before it."""
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        step(x)
    events = sorted(((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]"))
    live = peak = 0
    for _, nbytes in events:  # allocations positive, frees negative
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def quantile(v: list[float], q: float) -> float:
    v = sorted(v)
    i = q * (len(v) - 1)
    lo, hi = math.floor(i), math.ceil(i)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


def configs(kind: str, device: torch.device, backends: list[str]) -> list[tuple[str, Callable]]:
    """(label, factory) pairs; a factory builds a step function on a fresh VAE."""
    obj = {"elbo": lambda: Trace_ELBO(), "iwae": lambda: IWAE(num_particles=K),
           "dreg": lambda: IWAE(num_particles=K, gradient="dreg")}[kind]
    name = {"elbo": "ELBO", "iwae": f"IWAE k={K}", "dreg": f"DReG k={K}"}[kind]
    out = [(f"{name}, hand-written eager", lambda v: hand_step(v, kind, False)),
           (f"{name}, hand-written compiled", lambda v: hand_step(v, kind, True)),
           (f"{name}, hand-written eager, fused Adam", lambda v: hand_step(v, kind, False, fused=True))]
    if kind == "elbo":
        out += [("Pyro SVI + Trace_ELBO", lambda v: svi_step(v, Trace_ELBO())),
                ("Pyro SVI + JitTrace_ELBO", lambda v: svi_step(v, JitTrace_ELBO()))]
    elif kind == "iwae":
        out += [("Pyro RenyiELBO(alpha=0), vectorized", lambda v: svi_step(
                    v, RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1))),
                (f"pyro_deepgen IWAE({K}), general path", lambda v: svi_step(v, obj()))]
    else:
        out += [(f"pyro_deepgen IWAE({K}, dreg), general path", lambda v: svi_step(v, obj()))]
    for b in backends:  # what fit does with compile=b: its default optimizer (fused Adam)
        out.append((f"**ours: SVI + Compiled({name}, {b}), fused Adam**",
                    lambda v, b=b: svi_step(v, Compiled(obj(), backend=b), default_optim(1e-3))))
    return out


def measure(kind: str, batch: int, device: torch.device, args, x_all: torch.Tensor) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(batch)
    batches = [x_all[torch.randint(len(x_all), (batch,), generator=g)].to(device) for _ in range(4)]
    entries = []
    pyro.clear_param_store()
    for i, (label, factory) in enumerate(configs(kind, device, args.backends)):
        torch.manual_seed(0)  # the same initial weights; its own Pyro parameter names
        vae = VAE(784, 50, (400,), activation="tanh", name=f"vae{i}").to(device)
        step = factory(vae)
        start = time.perf_counter()
        for i in range(args.warmup):
            step(batches[i % len(batches)])
        sync(device)
        warm = time.perf_counter() - start
        entries.append({"label": label, "step": step, "warmup_s": warm, "times": [], "vae": vae,
                        "compiled": getattr(getattr(step, "__self__", None), "loss", None)})
    for _ in range(args.rounds):
        for e in entries:
            for i in range(args.steps):
                x = batches[i % len(batches)]
                sync(device)
                t = time.perf_counter()
                e["step"](x)
                sync(device)
                e["times"].append((time.perf_counter() - t) * 1e3)
    eager = statistics.median(entries[0]["times"])
    comp = statistics.median(entries[1]["times"])
    for e in entries:
        med = statistics.median(e["times"])
        loss = e["compiled"]
        rows.append({
            "objective": kind, "batch": batch, "config": e["label"], "ms_median": med,
            "iqr": quantile(e["times"], 0.75) - quantile(e["times"], 0.25),
            "vs_eager": med / eager, "vs_compiled": med / comp,
            "peak_mb": peak_memory(e["step"], batches[0]),
            "warmup_s": e["warmup_s"], "steps_timed": len(e["times"]),
            "compile_s": loss.compile_seconds if isinstance(loss, Compiled) else None,
            "stats": {k: v for k, v in loss.stats().items() if k != "fallbacks"} if isinstance(loss, Compiled)
            else None,
        })
        print(f"  {kind} B={batch}: {e['label']}: {med:.2f} ms", flush=True)
    return rows


# ----------------------------------------------------------------------------- evaluation


def linear_flops(module: torch.nn.Module) -> int:
    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def mm_gflops(module: torch.nn.Module, rows: int, device: torch.device, repeats: int = 5) -> float:
    layers = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    mats = [(torch.randn(rows, m.in_features, device=device), m.weight.detach().T.contiguous(),
             m.bias.detach()) for m in layers]
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        for a, w, b in mats:
            torch.addmm(b, a, w)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return rows * linear_flops(module) / best / 1e9


def evaluation(args, device: torch.device) -> dict:
    try:
        from pyro_deepgen.data import load_dataset
        x = load_dataset("binarized_mnist", "test", root=DATA).tensors[0]
        source = "binarized MNIST test split"
    except (FileNotFoundError, ValueError):
        x = torch.bernoulli(torch.full((10000, 784), 0.13), generator=torch.Generator().manual_seed(0))
        source = "random binary images (data files not found)"
    x = x[:args.eval_images].to(device)
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(784, 50, (200, 200), activation="tanh").to(device)
    ds = TensorDataset(x)
    n, k, batch = len(x), args.eval_samples, 100
    rows = 65536 // batch * batch
    flops = n * k * linear_flops(vae.decoder) + n * linear_flops(vae.encoder)
    report = {"images": n, "source": source, "num_samples": k, "matmul_gflop": flops / 1e9}
    mm = [mm_gflops(vae.decoder, rows, device)]
    for label, compiled in (("general", False), ("compiled", True)):
        sync(device)
        t = time.perf_counter()
        ll = log_likelihood(vae.model, vae.guide, ds, num_samples=k, batch_size=batch, compiled=compiled,
                            device=device)
        sync(device)
        seconds = time.perf_counter() - t
        mm.append(mm_gflops(vae.decoder, rows, device))
        report[label] = {"seconds": seconds, "gflops": flops / seconds / 1e9, "mean_ll": ll.mean().item()}
        print(f"  eval {label}: {seconds:.1f} s", flush=True)
    report["torch_mm_gflops"] = max(mm)
    report["torch_mm_gflops_all"] = mm
    for label in ("general", "compiled"):
        report[label]["fraction_of_mm"] = report[label]["gflops"] / report["torch_mm_gflops"]
    return report


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true",
                   help="B=128 only, fx backend only, 2 rounds of 3 steps, evaluation on 200 images")
    p.add_argument("--batch-sizes", default="128,1024", help="'' for the evaluation only")
    p.add_argument("--objectives", default="elbo,iwae,dreg")
    p.add_argument("--backends", default="fx,inductor")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=4, help="steps before timing (>= 3: general, traced, compiled)")
    p.add_argument("--eval-images", type=int, default=10000)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # JitTrace_ELBO's
    # hand-written DReG differentiates one compiled graph twice (retain_graph), which
    # donated buffers forbid
    torch._functorch.config.donated_buffer = False
    if args.quick:
        args.batch_sizes, args.backends, args.rounds, args.steps = "128", "fx", 2, 3
        args.eval_images = min(args.eval_images, 200)
    args.backends = [b for b in args.backends.split(",") if b]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    header = (f"torch {torch.__version__}, pyro {pyro.__version__}, device {device} ({machine}), "
              f"threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
              f"load average {os.getloadavg()[0]:.2f}")
    print(header, flush=True)
    x_all = torch.bernoulli(torch.full((4096, 784), 0.13), generator=torch.Generator().manual_seed(0))
    try:
        from pyro_deepgen.data import load_dataset
        x_all = load_dataset("binarized_mnist", "train", root=DATA).tensors[0][:4096]
    except (FileNotFoundError, ValueError):
        pass
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        for kind in args.objectives.split(","):
            rows += measure(kind, batch, device, args, x_all)
    print(header + f"; at the end: load average {os.getloadavg()[0]:.2f}")
    print("| config | B | ms/step (median) | IQR | vs hand eager | vs hand compiled | peak MB | "
          "warm-up s (compile) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['batch']} | {r['ms_median']:.2f} | {r['iqr']:.2f} | {r['vs_eager']:.2f} "
              f"| {r['vs_compiled']:.2f} | {r['peak_mb']:.0f} | {r['warmup_s']:.1f} |")
    report = {"header": header, "training": rows}
    if args.eval_images > 0:
        ev = evaluation(args, device)
        report["evaluation"] = ev
        print(f"IWAE-{ev['num_samples']} on {ev['images']} images ({ev['source']}), "
              f"{ev['matmul_gflop']:.0f} GFLOP of matmuls; torch.addmm at the decoder's shapes: "
              f"{ev['torch_mm_gflops']:.1f} GFLOP/s")
        for label in ("general", "compiled"):
            e = ev[label]
            print(f"  {label}: {e['seconds']:.1f} s, {e['gflops']:.1f} GFLOP/s, "
                  f"{100 * e['fraction_of_mm']:.0f} % of matmul throughput (mean log-lik {e['mean_ll']:.2f})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
