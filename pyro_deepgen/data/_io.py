"""Read a file's bytes, decompressing gzip (``.gz``) transparently."""

from __future__ import annotations

import gzip
import os
import zlib

__all__ = ["read_bytes"]


def read_bytes(path: str | os.PathLike) -> bytes:
    """Return the contents of ``path``, gunzipped if its name ends in ``.gz``.

    Raises ValueError naming the file if the gzip stream is truncated or corrupt.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if not path.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: truncated or corrupt gzip file ({e})") from e
