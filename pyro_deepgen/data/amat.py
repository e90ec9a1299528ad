"""Reader for Larochelle's binary ``.amat`` text format (one image per line of 0/1)."""

from __future__ import annotations

import os

import numpy as np

from ._io import read_bytes

__all__ = ["read_amat"]

_ZERO, _ONE, _SPACE, _NEWLINE = (ord(c) for c in "01 \n")


def read_amat(path: str | os.PathLike, n_cols: int = 784) -> np.ndarray:
    """Read a binary ``.amat`` or ``.amat.gz`` file as a uint8 array of shape (N, n_cols).

    Every line must hold ``n_cols`` whitespace-separated values, each ``0`` or ``1``.
    Raises ValueError naming the file (and 1-based line) on an empty file, a row of the
    wrong length, a bad value, or a truncated/corrupt gzip stream.
    """
    path = os.fspath(path)
    data = read_bytes(path).rstrip()
    if not data:
        raise ValueError(f"{path}: empty .amat file (no rows)")
    data += b"\n"
    fast = _parse_canonical(data, n_cols)
    return fast if fast is not None else _parse_lines(data, n_cols, path)


def _parse_canonical(data: bytes, n_cols: int) -> np.ndarray | None:
    """Vectorized parse of the canonical layout ``"d d ... d\\n"``; None if it does not apply."""
    width = 2 * n_cols
    if len(data) % width:
        return None
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)
    digits, seps = raw[:, 0::2], raw[:, 1::2]
    if not (np.all(seps[:, :-1] == _SPACE) and np.all(seps[:, -1] == _NEWLINE)):
        return None
    if not np.all((digits == _ZERO) | (digits == _ONE)):
        return None
    return digits - np.uint8(_ZERO)


def _parse_lines(data: bytes, n_cols: int, path: str) -> np.ndarray:
    """Per-line parse of any whitespace layout; raises on the first bad line."""
    lines = data.split(b"\n")[:-1]  # data ends with exactly one "\n"
    out = np.empty((len(lines), n_cols), dtype=np.uint8)
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) != n_cols:
            raise ValueError(
                f"{path}, line {i + 1}: expected {n_cols} values, got {len(tokens)}"
            )
        row = np.frombuffer(b"".join(tokens), dtype=np.uint8)
        if row.size != n_cols or not np.all((row == _ZERO) | (row == _ONE)):
            bad = next(t for t in tokens if t not in (b"0", b"1"))
            raise ValueError(
                f"{path}, line {i + 1}: expected 0 or 1, got {bad.decode(errors='replace')!r}"
            )
        out[i] = row - _ZERO
    return out
