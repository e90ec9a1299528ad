"""The names of :mod:`pyro_deepgen.runs` under their former module (and
:func:`~pyro_deepgen.models.run_hooks.load_first_stage`), for code that imports them from here."""

from pyro_deepgen.models.run_hooks import load_first_stage
from pyro_deepgen.runs import *  # noqa: F401,F403
from pyro_deepgen.runs import __all__ as _runs

__all__ = [*_runs, "load_first_stage"]
