"""Dataset registry and :func:`load_dataset`."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import download as _download
from .amat import read_amat
from .digits import read_digits
from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from .mat import read_frey

__all__ = [
    "BINARIZE_OPTIONS",
    "DATASETS",
    "DatasetInfo",
    "DynamicBinarizedDataset",
    "default_root",
    "image_shape",
    "load_dataset",
]

BINARIZE_OPTIONS = (None, "dynamic", "static")
ENV_VAR = "PYRO_DEEPGEN_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset."""

    name: str
    image_shape: tuple[int, int]
    splits: tuple[str, ...]
    sizes: tuple[int, ...]  # number of images per split, in the order of ``splits``
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        image_shape=(8, 8),
        splits=("train", "valid", "test"),
        sizes=(1297, 200, 300),
        description="scikit-learn's 8x8 digits, 17 grey levels, labelled; fixed random split "
        "(numpy default_rng(0)). Needs no files.",
    ),
    "binarized_mnist": DatasetInfo(
        name="binarized_mnist",
        image_shape=(28, 28),
        splits=("train", "valid", "test"),
        sizes=(50000, 10000, 10000),
        description="Statically binarized MNIST (Larochelle & Murray 2011), .amat text files in "
        "binarized_mnist/. Unlabelled, except test when binarized_mnist_test_labels.txt "
        "is present (it has no public original, so download cannot fetch it).",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        image_shape=(28, 28),
        splits=("train", "test"),
        sizes=(60000, 10000),
        description="MNIST grey-level digits (LeCun et al.), IDX files in mnist/, labelled.",
    ),
    "frey": DatasetInfo(
        name="frey",
        image_shape=(28, 20),
        splits=("train", "valid", "test"),
        sizes=(1565, 200, 200),
        description="Frey faces (frey_rawface.mat in freyfaces/), 1965 grey-level 28x20 faces, "
        "unlabelled; fixed random split (numpy default_rng(0)).",
    ),
}


class DynamicBinarizedDataset(TensorDataset):
    """TensorDataset whose first tensor (grey levels in [0, 1]) is re-binarized with a
    fresh Bernoulli draw (torch's global RNG) on every indexing, by int, slice or list."""

    def __getitem__(self, index):
        x, *rest = super().__getitem__(index)
        return (torch.bernoulli(x), *rest)


def default_root() -> Path:
    """Data root when none is given: ``$PYRO_DEEPGEN_DATA``, else
    ``$XDG_CACHE_HOME/pyro_deepgen``, else ``~/.cache/pyro_deepgen``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "pyro_deepgen"


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def image_shape(name: str) -> tuple[int, int]:
    """Height and width of one image of dataset ``name``."""
    return _info(name).image_shape


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    binarize: str | None = None,
    seed: int = 0,
) -> TensorDataset:
    """Load one split of a registered dataset as a TensorDataset of ``(x,)`` or ``(x, y)``.

    x is float32 (N, D) in [0, 1], images flattened row-major; y is int64 (N,).
    ``root`` defaults to :func:`default_root`. With ``download=True`` missing files are
    fetched into ``root`` (checksum-verified). ``binarize``: None (as stored),
    ``"dynamic"`` (fresh Bernoulli draw per access, torch global RNG) or ``"static"``
    (one draw from a ``torch.Generator`` seeded with ``seed``).
    """
    info = _info(name)
    if split not in info.splits:
        raise ValueError(
            f"unknown split {split!r} for dataset {name!r}; valid splits: {', '.join(info.splits)}"
        )
    if binarize not in BINARIZE_OPTIONS:
        raise ValueError(
            f"unknown binarize option {binarize!r}; valid options: None, 'dynamic', 'static'"
        )
    root = Path(root).expanduser() if root is not None else default_root()
    x, y = _LOADERS[name](root, split, download)
    tensors = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))]
    if y is not None:
        tensors.append(torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))
    if binarize == "static":
        gen = torch.Generator().manual_seed(seed)
        tensors[0] = torch.bernoulli(tensors[0], generator=gen)
    elif binarize == "dynamic":
        return DynamicBinarizedDataset(*tensors)
    return TensorDataset(*tensors)


def _find(
    root: Path, name: str, folder: str, candidates: list[str], original: str, download: bool
) -> Path:
    """First existing ``root/folder/candidate``; else download ``original`` or raise."""
    paths = [root / folder / c for c in candidates]
    for p in paths:
        if p.is_file():
            return p
    if download:
        return _download.fetch(name, original, root / folder)
    raise FileNotFoundError(
        f"{name}: file not found; looked for: {', '.join(map(str, paths))}. "
        f"Pass download=True (CLI: --download) to fetch it, or set root= (CLI: --data-root, "
        f"or ${ENV_VAR}) to a folder that contains {folder}/."
    )


def _fixed_split(n: int, name: str, split: str) -> np.ndarray:
    """Indices of ``split`` in a permutation of ``range(n)`` from ``default_rng(0)``."""
    info = DATASETS[name]
    perm = np.random.default_rng(0).permutation(n)
    ends = np.cumsum(info.sizes)
    if ends[-1] != n:
        raise ValueError(f"{name}: expected {ends[-1]} images in total, got {n}")
    i = info.splits.index(split)
    return perm[ends[i] - info.sizes[i] : ends[i]]


def _load_digits(root: Path, split: str, download: bool):
    x, y = read_digits()
    idx = _fixed_split(len(x), "digits", split)
    return x[idx], y[idx]


def _load_binarized_mnist(root: Path, split: str, download: bool):
    stem = f"binarized_mnist_{split}.amat"
    path = _find(root, "binarized_mnist", "binarized_mnist", [stem, stem + ".gz"], stem, download)
    x = read_amat(path, 784)
    if split != "test":
        return x, None
    labels = root / "binarized_mnist" / "binarized_mnist_test_labels.txt"
    if not labels.is_file():
        if download:
            warnings.warn(
                f"{labels} is missing and has no public original to download; "
                "loading the binarized_mnist test split without labels",
                stacklevel=3,
            )
        return x, None
    return x, _read_labels_txt(labels, len(x))


def _read_labels_txt(path: Path, n: int) -> np.ndarray:
    """One integer label per line; must match the number of images ``n``."""
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != n:
        raise ValueError(f"{path}: has {len(lines)} labels but the images file has {n} images")
    try:
        y = np.array([int(s) for s in lines], dtype=np.int64)
    except ValueError as e:
        raise ValueError(f"{path}: labels must be one integer per line ({e})") from e
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, got {y.min()}..{y.max()}")
    return y


def _load_mnist(root: Path, split: str, download: bool):
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = f"{prefix}-{kind}"
        found.append(_find(root, "mnist", "mnist", [stem, stem + ".gz"], stem + ".gz", download))
    images = read_idx(found[0], IMAGES_MAGIC)
    labels = read_idx(found[1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"{found[0]} has {len(images)} images but {found[1]} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{found[1]}: labels must be in 0..9, got max {labels.max()}")
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return x, labels.astype(np.int64)


def _load_frey(root: Path, split: str, download: bool):
    path = _find(root, "frey", "freyfaces", ["frey_rawface.mat"], "frey_rawface.mat", download)
    faces = read_frey(path)
    idx = _fixed_split(len(faces), "frey", split)
    return faces[idx].astype(np.float32) / np.float32(255), None


_LOADERS = {
    "digits": _load_digits,
    "binarized_mnist": _load_binarized_mnist,
    "mnist": _load_mnist,
    "frey": _load_frey,
}
