"""Flows fitted to the 2-D energies of Rezende & Mohamed (2015), Fig. 3, by reverse KL:
the ELBO against log Z for each (energy, flow, K), and paper-style density plots.

    python benchmarks/toy_energies.py --out runs/toy-energies
    python benchmarks/toy_energies.py --out /tmp/toy --steps 20 --samples 2000   # a smoke run

Writes to --out: ``results.json`` (one row per fit, written after each fit; a
rerun skips the fits already there with the same steps, lr, particles and
init), ``results.md`` (the table), ``flows/*.pt`` (each fitted flow's state)
and ``densities_<flow>.png`` (rows: energies; columns: the target, then each
K; the flows as histograms of their samples).
The energies carry Gaussian walls outside [-4, 4]^2 (``pyro_deepgen.data.toy``),
so that U2-U4 are normalizable and ELBO <= log Z; the fits are
``pyro_deepgen.guides.fit_energy``'s. The flows start at the
identity (``--init identity``, ``pyro_deepgen.guides.flows.init_identity_``);
``--init pyro`` keeps Pyro's random initialisation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_deepgen.data import toy  # noqa: E402
from pyro_deepgen.guides import Flow, fit_energy  # noqa: E402


def _key(name: str, flow: str, k: int) -> str:
    return f"{name}_{flow}_K{k}"


def _table(rows: list[dict]) -> str:
    lines = ["| energy | flow | K | ELBO | log Z | log Z - ELBO | steps | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['energy']} | {r['flow']} | {r['num_flows']} | {r['elbo']:.3f} ± "
                     f"{r['elbo_stderr']:.3f} | {r['log_z']:.3f} | {r['gap']:.3f} | {r['steps']} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _plot(flow: str, energies: list[str], ks: list[int], out: Path, resolution: int,
          samples: int) -> Path:
    fig, axes = plt.subplots(len(energies), len(ks) + 1, figsize=(2.2 * (len(ks) + 1), 2.2 * len(energies)),
                             squeeze=False)
    for i, name in enumerate(energies):
        panels = [("target", toy.density_grid(name, resolution=resolution))]
        for k in ks:
            q = Flow(2, flow, k)
            q.load_state_dict(torch.load(out / "flows" / f"{_key(name, flow, k)}.pt", weights_only=True))
            panels.append((f"{flow} K={k}", toy.density_grid(q, resolution=resolution, num_samples=samples)))
        for j, (title, g) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(g.density, origin="lower", extent=g.extent, cmap="viridis")
            ax.set(xticks=[], yticks=[])
            if i == 0:
                ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    path = out / f"densities_{flow}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--energies", default="U1,U2,U3,U4")
    p.add_argument("--flows", default="planar,radial,iaf")
    p.add_argument("--num-flows", default="2,8,32")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--particles", type=int, default=256)
    p.add_argument("--anneal-steps", type=int, default=None, help="default: steps // 4")
    p.add_argument("--init", default="identity", choices=["identity", "pyro"],
                   help="the transforms' initialisation")
    p.add_argument("--samples", type=int, default=100_000, help="draws for the final ELBO")
    p.add_argument("--resolution", type=int, default=150, help="density plot cells per side")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    energies = args.energies.split(",")
    flows = args.flows.split(",")
    ks = [int(k) for k in args.num_flows.split(",")]
    out = Path(args.out)
    (out / "flows").mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    rows = json.loads(results_path.read_text()) if results_path.exists() else []
    config = {"steps": args.steps, "lr": args.lr, "num_particles": args.particles, "init": args.init}
    done = {_key(r["energy"], r["flow"], r["num_flows"]) for r in rows
            if all(r.get(c) == v for c, v in config.items())}
    for name in energies:
        for flow in flows:
            for k in ks:
                key = _key(name, flow, k)
                if key in done and (out / "flows" / f"{key}.pt").exists():
                    continue
                fit = fit_energy(name, flow, k, steps=args.steps, lr=args.lr,
                                 num_particles=args.particles, anneal_steps=args.anneal_steps,
                                 num_samples=args.samples, seed=args.seed, init=args.init)
                torch.save(fit.module.state_dict(), out / "flows" / f"{key}.pt")
                rows = [r for r in rows if _key(r["energy"], r["flow"], r["num_flows"]) != key]
                rows.append({**fit.as_dict(), "lr": args.lr, "num_particles": args.particles})
                tmp = results_path.with_name(f"results.json.tmp{os.getpid()}")
                tmp.write_text(json.dumps(rows, indent=1))
                os.replace(tmp, results_path)
                print(f"{name} {flow} K={k}: ELBO {fit.elbo:.3f} ± {fit.elbo_stderr:.3f}, "
                      f"log Z {fit.log_z:.3f}, gap {fit.gap:.3f} ({fit.seconds:.0f} s)", flush=True)
    order = {_key(n, f, k): i for i, (n, f, k) in enumerate(
        (n, f, k) for n in energies for f in flows for k in ks)}
    rows = sorted((r for r in rows if _key(r["energy"], r["flow"], r["num_flows"]) in order),
                  key=lambda r: order[_key(r["energy"], r["flow"], r["num_flows"])])
    (out / "results.md").write_text(_table(rows))
    for flow in flows:
        print("wrote", _plot(flow, energies, ks, out, args.resolution, min(args.samples, 200_000)))
    print(_table(rows))
    assert all(math.isfinite(r["elbo"]) for r in rows)


if __name__ == "__main__":
    main()
