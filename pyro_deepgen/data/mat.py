"""Reader for the Frey faces MATLAB file ``frey_rawface.mat`` (via ``scipy.io.loadmat``)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["FREY_SHAPE", "read_frey"]

FREY_SHAPE = (560, 1965)  # shape of variable ``ff``: one 28 x 20 face per column


def read_frey(path: str | os.PathLike) -> np.ndarray:
    """Read ``frey_rawface.mat`` and return the faces as rows: uint8 of shape (1965, 560).

    Raises ValueError naming the file if it is not a readable MATLAB file, lacks the
    variable ``ff``, or ``ff`` is not uint8 of shape (560, 1965).
    """
    import scipy.io

    path = os.fspath(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=["ff"])
    except FileNotFoundError:
        raise
    except Exception as e:  # scipy raises assorted types on corrupt input
        raise ValueError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e})") from e
    if "ff" not in mat:
        raise ValueError(f"{path}: MATLAB file has no variable 'ff'")
    ff = mat["ff"]
    if not isinstance(ff, np.ndarray) or ff.dtype != np.uint8 or ff.shape != FREY_SHAPE:
        got = f"{ff.dtype} {ff.shape}" if isinstance(ff, np.ndarray) else type(ff).__name__
        raise ValueError(
            f"{path}: variable 'ff' should be uint8 of shape {FREY_SHAPE}, got {got}"
        )
    return np.ascontiguousarray(ff.T)
