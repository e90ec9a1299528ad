"""Sphinx configuration for pyro_deepgen."""

import os
import sys

# Import the package from the checkout, without installing it.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

# Autodoc imports modules that import matplotlib.pyplot: never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")

import pyro_deepgen  # noqa: E402

project = "pyro_deepgen"
author = "The pyro_deepgen developers"
copyright = "2025, The pyro_deepgen developers"
release = pyro_deepgen.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Unresolved cross-references (e.g. to torch or pyro types) are not errors.
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

myst_heading_anchors = 3

html_theme = "alabaster"
html_static_path = []
