"""Every docstring example in the package runs and prints what it shows (the public
classes' examples included: a module without any has none to run)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import pyro_deepgen

MODULES = sorted(m.name for m in pkgutil.walk_packages(pyro_deepgen.__path__, "pyro_deepgen.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             extraglobs={"torch": torch})
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
