"""The package's bottom layer imports nothing above it.

``pyro_deepgen.data``, ``pyro_deepgen.nn`` and ``pyro_deepgen.distributions`` are the
base of the package: data sets, networks and distributions. Everything else (``infer``,
``models``, ``guides``, ``evaluate``, ``diagnostics``, ``train``, ``experiment``, ``cli``,
``distributed``, ``plots``, ...) is built on them, so they may import each other but
nothing of those. The modules are parsed with :mod:`ast`, never imported, so that an
import inside a function (run only when called) is caught as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_deepgen"

#: the bottom layer: these modules (and everything below them)...
BASE = ("pyro_deepgen.data", "pyro_deepgen.nn", "pyro_deepgen.distributions")
#: ...may import each other, and the package root (``pyro_deepgen/__init__.py``,
#: which holds ``__version__`` and imports nothing), but no other part of pyro_deepgen
ALLOWED = BASE + ("pyro_deepgen",)


def module_name(path: Path) -> str:
    """``pyro_deepgen/data/toy.py`` -> ``pyro_deepgen.data.toy``; a package's
    ``__init__.py`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def base_modules() -> list[Path]:
    files = [PACKAGE / "distributions.py"]
    for package in ("data", "nn"):
        files += sorted((PACKAGE / package).rglob("*.py"))
    return files


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` (``pyro_deepgen.x.y``) names a module or package of this checkout."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, name: str, is_package: bool = False) -> list[tuple[int, str, str]]:
    """The pyro_deepgen modules that the source of module ``name`` imports, as
    ``(line, module, statement)``: ``import a.b``, ``from a.b import c`` (``a.b.c``
    where ``c`` is a module), relative imports resolved against ``name``, and
    ``importlib.import_module("...")``/``__import__("...")`` with a literal name."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise ValueError(f"{name}, line {node.lineno}: relative import beyond the top package")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if _is_module(f"{module}.{alias.name}") else module
                       for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")
                   or isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            targets = [node.args[0].value]
        statement = ast.unparse(node) if targets else ""
        found += [(node.lineno, t, statement) for t in targets
                  if t == "pyro_deepgen" or t.startswith("pyro_deepgen.")]
    return sorted(found)


def _allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in BASE) or module == "pyro_deepgen"


def violations(path: Path) -> list[str]:
    name = module_name(path)
    return [f"{name} (line {line}) imports {module}: `{statement}`"
            for line, module, statement in imported_modules(path.read_text(), name,
                                                            path.name == "__init__.py")
            if not _allowed(module)]


def test_the_base_layer_is_what_it_says():
    names = [module_name(p) for p in base_modules()]
    assert "pyro_deepgen.distributions" in names and "pyro_deepgen.data" in names
    assert "pyro_deepgen.data.toy" in names and "pyro_deepgen.nn.mlp" in names
    # the package root, which the base layer may import, holds nothing but the version
    assert imported_modules((PACKAGE / "__init__.py").read_text(), "pyro_deepgen", True) == []


@pytest.mark.parametrize("path", base_modules(), ids=module_name)
def test_base_layer_imports_nothing_above_it(path):
    found = violations(path)
    assert not found, ("data/, nn/ and distributions.py sit at the bottom of pyro_deepgen and "
                       "may only import each other:\n  " + "\n  ".join(found))


def test_the_check_sees_every_form_of_import():
    source = """
import os
import pyro_deepgen
import pyro_deepgen.infer.iwae as iwae
from pyro_deepgen import __version__, models
from pyro_deepgen.data import toy
from pyro_deepgen.nn import MLP
from . import labels
from .amat import read_amat
from .. import train
from ..guides.flows import Flow
from ..distributions import IndependentBernoulli


def fit():
    from pyro_deepgen.guides.flows import Flow  # inside a function
    return importlib.import_module("pyro_deepgen.evaluate")
"""
    found = imported_modules(source, "pyro_deepgen.data.fake")
    assert [m for _, m, _ in found] == [
        "pyro_deepgen", "pyro_deepgen.infer.iwae", "pyro_deepgen", "pyro_deepgen.models",
        "pyro_deepgen.data.toy", "pyro_deepgen.nn", "pyro_deepgen.data.labels",
        "pyro_deepgen.data.amat", "pyro_deepgen.train", "pyro_deepgen.guides.flows",
        "pyro_deepgen.distributions", "pyro_deepgen.guides.flows", "pyro_deepgen.evaluate"]
    assert [m for _, m, _ in found if not _allowed(m)] == [
        "pyro_deepgen.infer.iwae", "pyro_deepgen.models", "pyro_deepgen.train",
        "pyro_deepgen.guides.flows", "pyro_deepgen.guides.flows", "pyro_deepgen.evaluate"]
    # in a package's __init__.py, "." is the package itself
    assert imported_modules("from .toy import energy", "pyro_deepgen.data", True)[0][1] == \
        "pyro_deepgen.data.toy"
    assert imported_modules("from .toy import energy", "pyro_deepgen.data.labels")[0][1] == \
        "pyro_deepgen.data.toy"
