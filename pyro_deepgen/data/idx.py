"""Reader for the IDX binary format of MNIST (``*-ubyte``, optionally ``.gz``)."""

from __future__ import annotations

import os

import numpy as np

from ._io import read_bytes

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "read_idx"]

IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dims (N, rows, cols)
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dim (N,)

_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX or IDX ``.gz`` file into a (native-endian) numpy array.

    ``expected_magic`` (e.g. ``IMAGES_MAGIC``) is checked when given. Raises ValueError
    naming the file on a bad magic number, a size that disagrees with the header
    (truncated file), or a truncated/corrupt gzip stream.
    """
    path = os.fspath(path)
    data = read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(data)} bytes, no 4-byte header")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: bad IDX magic number: expected {expected_magic} "
            f"(0x{expected_magic:08x}), got {magic} (0x{magic:08x})"
        )
    code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or code not in _DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file: bad magic number 0x{magic:08x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX file: header needs {header} bytes, file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "oversized"
        raise ValueError(
            f"{path}: {what} IDX file: header dims {dims} need {expected} bytes, "
            f"file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)
