"""Tries each bad input of the foundation and prints the error it gives, as a
Markdown table for docs/benchmarks.md.

    python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
from pathlib import Path

import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_deepgen.cli import main as cli
from pyro_deepgen.data import load_dataset
from pyro_deepgen.evaluate import log_likelihood
from pyro_deepgen.infer import make_objective
from pyro_deepgen.models import VAE
from pyro_deepgen.train import fit

DATA = Path(os.environ.get("PYRO_DEEPGEN_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))


def _write_idx(path: Path, magic: int, dims: list[int], payload: bytes) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + payload)


def cases(tmp: Path):
    amat = tmp / "binarized_mnist"
    amat.mkdir()
    row = " ".join(["0"] * 784)
    yield "unknown data set name", lambda: load_dataset("cifar10")
    yield "unknown split", lambda: load_dataset("digits", "validation")
    yield "missing file", lambda: load_dataset("mnist", "train", root=DATA)
    yield "unknown binarize option", lambda: load_dataset("digits", binarize="otsu")

    def short_row():
        (amat / "binarized_mnist_valid.amat").write_text(row + "\n" + " ".join(["1"] * 700) + "\n")
        load_dataset("binarized_mnist", "valid", root=tmp)
    yield "`.amat` row of the wrong length", short_row

    def bad_value():
        (amat / "binarized_mnist_test.amat").write_text(row + "\n" + row[:-1] + "2\n")
        load_dataset("binarized_mnist", "test", root=tmp)
    yield "`.amat` value other than 0/1", bad_value

    def truncated_gzip():
        data = gzip.compress((row + "\n").encode() * 10)
        (amat / "binarized_mnist_train.amat.gz").write_bytes(data[: len(data) // 2])
        load_dataset("binarized_mnist", "train", root=tmp)
    yield "truncated `.amat.gz`", truncated_gzip

    mnist = tmp / "mnist"
    mnist.mkdir()

    def wrong_magic():
        _write_idx(mnist / "t10k-images-idx3-ubyte", 2049, [1, 28, 28], bytes(784))
        _write_idx(mnist / "t10k-labels-idx1-ubyte", 2049, [1], bytes(1))
        load_dataset("mnist", "test", root=tmp)
    yield "IDX file with the wrong magic number", wrong_magic

    def truncated_idx():
        _write_idx(mnist / "t10k-images-idx3-ubyte", 2051, [2, 28, 28], bytes(784))
        load_dataset("mnist", "test", root=tmp)
    yield "truncated IDX file", truncated_idx

    grey = load_dataset("digits", "test").tensors[0]
    yield "grey data to a Bernoulli VAE", lambda: VAE(64).model(grey)
    yield "wrong feature size", lambda: VAE(784).model(torch.zeros(5, 64))
    yield "unknown likelihood", lambda: VAE(64, likelihood="poisson")
    yield "unknown objective", lambda: make_objective("elbow")
    yield "objective family without k", lambda: make_objective("iwae")
    yield "IWAE with k = 0", lambda: make_objective("iwae-0")
    yield "log_likelihood with num_samples = 0", lambda: log_likelihood(
        VAE(64).model, VAE(64).guide, TensorDataset(torch.zeros(2, 64)), num_samples=0)
    yield "early stopping without a validation set", lambda: fit(
        VAE(64).model, VAE(64).guide, TensorDataset(torch.zeros(2, 64)), Trace_ELBO(), patience=3)
    if not torch.cuda.is_available():
        yield "`--device cuda` without CUDA", lambda: fit(
            VAE(64).model, VAE(64).guide, TensorDataset(torch.zeros(2, 64)), Trace_ELBO(), device="cuda")

    def cli_error(argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli(argv)
        raise SystemExit(f"exit {code}: {err.getvalue().strip()}")
    yield "CLI: mistyped objective", lambda: cli_error(["train", "--objective", "vimc0", "--out", str(tmp / "r")])
    yield "CLI: evaluate a folder that is not a run", lambda: cli_error(["evaluate", str(tmp)])


def main() -> None:
    print("| bad input | error |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, fn in cases(Path(d)):
            try:
                fn()
                msg = "NO ERROR"
            except SystemExit as e:
                msg = str(e)
            except Exception as e:  # noqa: BLE001 - we report whatever is raised
                msg = f"{type(e).__name__}: {e}"
            msg = msg.replace(d, "<tmp>").replace("|", "\\|").replace("\n", " ")
            print(f"| {name} | `{msg}` |")


if __name__ == "__main__":
    main()
