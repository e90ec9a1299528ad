"""Executes every notebook in tutorials/ with nbclient, in its small configuration."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel below runs it; fail here, loudly, if it is missing)
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
KERNEL = "pyro-deepgen-test"


def test_there_are_tutorials():
    assert NOTEBOOKS, f"no notebooks in {TUTORIALS}"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernel spec, in a temporary folder put first on JUPYTER_PATH, that runs this very
    interpreter (not whatever ``python3`` kernel the user's home or the system holds) with
    the repository importable and the tutorials in their small configuration. Nothing is
    written outside ``tmp_path``."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pyro_deepgen tests",
        "language": "python",
        "env": {
            "PYTHONPATH": pythonpath,
            "PYRO_DEEPGEN_TUTORIAL_SMALL": "1",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            # The small runs gain nothing from threads, and on a shared or busy CI machine
            # OpenMP threads competing for cores slow torch down many times over.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        },
    }))
    jupyter_path = os.environ.get("JUPYTER_PATH")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        p for p in (str(tmp_path / "jupyter"), jupyter_path) if p))
    # Keep the kernel's connection files and IPython's profile out of the user's home.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYRO_DEEPGEN_TUTORIAL_SMALL", "1")
    return KERNEL


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_runs(path: Path, kernel_name: str):
    nb = nbformat.read(path, as_version=4)
    # A first cell (in memory only) reports which interpreter and package the kernel uses.
    probe = "import sys, pyro_deepgen; print(sys.executable); print(pyro_deepgen.__file__)"
    nb.cells.insert(0, nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_name, timeout=600, allow_errors=False,
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell failed:\n{e}", pytrace=False)
    # The kernel ran this interpreter and imported the package from this checkout.
    executable, package = nb.cells[0].outputs[0]["text"].splitlines()
    assert Path(executable) == Path(sys.executable)
    assert Path(package).resolve().is_relative_to(ROOT / "pyro_deepgen")
