"""The 8 x 8 digits embedded in scikit-learn (``sklearn.datasets.load_digits``)."""

from __future__ import annotations

import numpy as np

__all__ = ["read_digits"]


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return all 1797 digits: x float32 (1797, 64) in [0, 1] (pixels / 16), y int64 (1797,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    return x, np.asarray(bunch.target, dtype=np.int64)
