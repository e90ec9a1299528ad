import os
import sys
from pathlib import Path

import pyro
import pytest

from pyro_deepgen.data import default_root
from pyro_deepgen.data.datasets import ENV_VAR

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Where the tests read the real data sets, by README's rule: ``$PYRO_DEEPGEN_DATA``
    (read as :func:`pyro_deepgen.data.default_root` reads it), else ``../shared/data``
    next to the repository. Looked up when a test asks for it, not at import."""
    return default_root() if os.environ.get(ENV_VAR) else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def require_data_root() -> Path:
    """:func:`data_root`, or a test failure (never a skip) that says how to point the tests
    at the real data sets when it is not a folder."""
    root = data_root()
    if not root.is_dir():
        how = (f"${ENV_VAR} is {os.environ[ENV_VAR]!r}" if os.environ.get(ENV_VAR)
               else f"${ENV_VAR} is not set, and the default, ../shared/data next to the repository, "
                    f"is missing")
        pytest.fail(f"the real data sets are not found: {root} is not a folder ({how}). Set "
                    f"{ENV_VAR} to the folder that holds binarized_mnist/, mnist/ and freyfaces/.",
                    pytrace=False)
    return root


@pytest.fixture
def shared_data() -> Path:
    """The real data sets' root (:func:`data_root`) for a test that needs them: it fails,
    never skips, when they cannot be found."""
    return require_data_root()
