"""Fetch the public originals of the data sets, verifying checksums before use."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CHECKSUMS", "MIRRORS", "ChecksumError", "DownloadError", "download_file", "fetch"]

# Base URLs per dataset, tried in order; a file's URL is base + file name.
MIRRORS: dict[str, tuple[str, ...]] = {
    "binarized_mnist": (
        "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "frey": ("https://cs.nyu.edu/~roweis/data/",),
}

# File name -> (hash algorithm, hex digest) of the file as downloaded.
CHECKSUMS: dict[str, tuple[str, str]] = {
    # MNIST: the published MD5s of the official .gz files.
    "train-images-idx3-ubyte.gz": ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": ("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": ("md5", "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": ("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    # Binarized MNIST and Frey have no official checksums. These SHA-256s were computed
    # from the reference copies in the project's shared data folder: for the .amat
    # files, of the gunzipped bytes of binarized_mnist_{split}.amat.gz (the originals
    # are served uncompressed; each is 1568 bytes per line, 784 values "0"/"1");
    # for Frey, of frey_rawface.mat itself.
    "binarized_mnist_train.amat": (
        "sha256",
        "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    ),
    "binarized_mnist_valid.amat": (
        "sha256",
        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    ),
    "binarized_mnist_test.amat": (
        "sha256",
        "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
    ),
    "frey_rawface.mat": (
        "sha256",
        "a016f2732a218567c521d766a828d6efdf304a42f3437aa7e947547c92c02ef0",
    ),
}

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Every mirror failed to deliver a file."""


class ChecksumError(DownloadError):
    """A downloaded file's digest differs from the published one."""


def download_file(
    urls: Sequence[str], dest: str | os.PathLike, algorithm: str, digest: str
) -> Path:
    """Download the first URL that works to ``dest``, verifying its ``algorithm`` digest.

    Data go to a temporary file next to ``dest``, which is moved into place only after
    the digest matches. A mismatch deletes it and raises ChecksumError (URL, expected
    and actual digest); if every URL fails, raises DownloadError listing them.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        try:
            h = hashlib.new(algorithm)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
                    while chunk := r.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
            except (OSError, http.client.HTTPException) as e:
                failures.append(f"{url} ({type(e).__name__}: {e})")
                continue
            actual = h.hexdigest()
            if actual != digest.lower():
                raise ChecksumError(
                    f"checksum mismatch for {url}: expected {algorithm} {digest}, "
                    f"got {actual}; the download was deleted"
                )
            os.replace(tmp, dest)
            return dest
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DownloadError(
        f"could not download {dest.name}; tried:\n  " + "\n  ".join(failures or ["(no URLs)"])
    )


def fetch(dataset: str, filename: str, folder: str | os.PathLike) -> Path:
    """Download ``filename`` of ``dataset`` from ``MIRRORS`` into ``folder``, checked
    against ``CHECKSUMS[filename]``; return its path."""
    if filename not in CHECKSUMS:
        raise DownloadError(f"no published checksum for {filename}; refusing to download it")
    algorithm, digest = CHECKSUMS[filename]
    urls = [base.rstrip("/") + "/" + filename for base in MIRRORS[dataset]]
    return download_file(urls, Path(folder) / filename, algorithm, digest)
