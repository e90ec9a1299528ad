"""Tests for pyro_deepgen.data: loaders on the real shared data, readers, errors, download."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import pyro_deepgen.data.download as dl
from pyro_deepgen.data import (
    DATASETS,
    ChecksumError,
    DownloadError,
    DynamicBinarizedDataset,
    default_root,
    image_shape,
    load_dataset,
    read_amat,
    read_digits,
    read_frey,
    read_idx,
)

# The real data sets (read-only) come from the `shared_data` fixture of conftest.py:
# $PYRO_DEEPGEN_DATA, else ../shared/data next to the repository. Tests that need them fail,
# never skip, without them.


# ---------------------------------------------------------------- helpers: crafted files


def amat_bytes(rows: np.ndarray) -> bytes:
    return b"".join(" ".join(map(str, r)).encode() + b"\n" for r in rows)


def write_amat(root: Path, split: str, rows: np.ndarray, gz: bool = False) -> Path:
    folder = root / "binarized_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"binarized_mnist_{split}.amat{'.gz' if gz else ''}"
    data = amat_bytes(rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz=False):
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        (folder / f"{prefix}-{kind}{ext}").write_bytes(gzip.compress(data) if gz else data)


def rand_bits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, 784))


def as_row_multiset(x: np.ndarray, y: np.ndarray | None = None) -> list[bytes]:
    rows = [r.tobytes() for r in np.ascontiguousarray(x)]
    if y is not None:
        rows = [r + int(t).to_bytes(1, "big") for r, t in zip(rows, y)]
    return sorted(rows)


# ---------------------------------------------------------------- real data sets


def test_registry_and_image_shape():
    assert set(DATASETS) == {"digits", "binarized_mnist", "mnist", "frey"}
    assert image_shape("digits") == (8, 8)
    assert image_shape("binarized_mnist") == image_shape("mnist") == (28, 28)
    assert image_shape("frey") == (28, 20)
    for name, info in DATASETS.items():
        assert info.name == name and len(info.splits) == len(info.sizes) and info.description
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*binarized_mnist"):
        image_shape("cifar")


@pytest.mark.parametrize("split,n", [("train", 50000), ("valid", 10000), ("test", 10000)])
def test_binarized_mnist(split, n, shared_data):
    ds = load_dataset("binarized_mnist", split, root=shared_data)
    x = ds.tensors[0]
    assert x.shape == (n, 784) and x.dtype == torch.float32
    assert torch.all((x == 0) | (x == 1)) and x.min() == 0 and x.max() == 1
    if split != "test":
        assert len(ds.tensors) == 1
        return
    y = ds.tensors[1]
    assert y.shape == (n,) and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))
    assert torch.all(y[1:] >= y[:-1])  # this copy's test split is sorted by label


def test_mnist_test(shared_data):
    x, y = load_dataset("mnist", "test", root=shared_data).tensors
    assert x.shape == (10000, 784) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1
    assert torch.allclose(x * 255, torch.round(x * 255), atol=1e-4)  # 256 grey levels
    assert set(y.tolist()) == set(range(10))
    assert read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz").shape == (60000,)


def test_mnist_train_images_absent_offline(shared_data):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz.*download=True"):
        load_dataset("mnist", "train", root=shared_data)


@pytest.mark.parametrize("name,total,dim", [("digits", 1797, 64), ("frey", 1965, 560)])
def test_fixed_splits_partition_and_deterministic(name, total, dim, shared_data):
    info = DATASETS[name]
    parts = [load_dataset(name, s, root=shared_data) for s in info.splits]
    assert [len(p) for p in parts] == list(info.sizes) and sum(info.sizes) == total
    again = load_dataset(name, "valid", root=shared_data, seed=123)
    assert all(torch.equal(a, b) for a, b in zip(again.tensors, parts[1].tensors))
    xs = torch.cat([p.tensors[0] for p in parts]).numpy()
    assert xs.shape == (total, dim) and xs.dtype == np.float32
    assert xs.min() >= 0 and xs.max() <= 1
    if name == "digits":
        ys = torch.cat([p.tensors[1] for p in parts]).numpy()
        assert ys.dtype == np.int64 and set(ys) == set(range(10))
        assert np.allclose(xs * 16, np.round(xs * 16))
        full_x, full_y = read_digits()
        # Sizes sum to the total and the union is the whole data set: a disjoint partition.
        assert as_row_multiset(xs, ys) == as_row_multiset(full_x, full_y)
    else:
        assert all(len(p.tensors) == 1 for p in parts)
        levels = np.round(xs * 255)
        assert np.allclose(xs * 255, levels, atol=1e-3)
        assert levels.min() == 8 and levels.max() == 238
        full = read_frey(shared_data / "freyfaces" / "frey_rawface.mat")
        assert full.shape == (1965, 560)
        assert as_row_multiset(levels.astype(np.uint8)) == as_row_multiset(full)


# ---------------------------------------------------------------- plain and gzip formats


def test_plain_and_gz_amat(tmp_path):
    rows = rand_bits(5)
    write_amat(tmp_path, "valid", rows)
    write_amat(tmp_path, "train", rows[:3], gz=True)
    assert np.array_equal(load_dataset("binarized_mnist", "valid", root=tmp_path).tensors[0],
                          rows.astype(np.float32))
    assert np.array_equal(load_dataset("binarized_mnist", "train", root=tmp_path).tensors[0],
                          rows[:3].astype(np.float32))
    # Non-canonical whitespace (CRLF, tabs, repeated spaces, no final newline) takes the
    # slow path and gives the same result.
    odd = tmp_path / "odd.amat"
    odd.write_bytes(b"\r\n".join(b"  " + b" \t ".join(r.astype(str).astype(bytes)) + b" "
                                 for r in rows))
    assert np.array_equal(read_amat(odd), rows)


def test_plain_idx(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 28, 28))
    labels = np.array([3, 1, 4, 1])
    write_mnist(tmp_path, "t10k", images, labels)
    x, y = load_dataset("mnist", "test", root=tmp_path).tensors
    assert torch.allclose(x, torch.tensor(images.reshape(4, -1) / 255, dtype=torch.float32))
    assert y.tolist() == [3, 1, 4, 1] and y.dtype == torch.int64


# ---------------------------------------------------------------- errors


def test_bad_name_split_binarize():
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'; valid names: digits, .*frey"):
        load_dataset("mnsit")
    with pytest.raises(ValueError, match="unknown split 'valid' for dataset 'mnist'; "
                                         "valid splits: train, test"):
        load_dataset("mnist", "valid")
    with pytest.raises(ValueError, match="unknown binarize option 'yes'.*'dynamic', 'static'"):
        load_dataset("digits", binarize="yes")


def test_missing_file_lists_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("binarized_mnist", "valid", root=tmp_path)
    msg = str(e.value)
    for name in ("binarized_mnist_valid.amat", "binarized_mnist_valid.amat.gz"):
        assert str(tmp_path / "binarized_mnist" / name) in msg
    assert "download=True" in msg and "PYRO_DEEPGEN_DATA" in msg
    with pytest.raises(FileNotFoundError, match=r"frey_rawface\.mat"):
        load_dataset("frey", root=tmp_path)


def test_amat_errors(tmp_path):
    rows = rand_bits(3)
    short = tmp_path / "short.amat"
    short.write_bytes(amat_bytes(rows[:1]) + amat_bytes(rows[1:2, :783]) + amat_bytes(rows[2:]))
    with pytest.raises(ValueError, match=r"short\.amat, line 2: expected 784 values, got 783"):
        read_amat(short)
    bad = rows.astype(str)
    bad[2, 10] = "2"
    two = tmp_path / "two.amat"
    two.write_bytes(b"".join(" ".join(r).encode() + b"\n" for r in bad))
    with pytest.raises(ValueError, match=r"two\.amat, line 3: expected 0 or 1, got '2'"):
        read_amat(two)
    bad[2, 10] = "0.5"
    half = tmp_path / "half.amat"
    half.write_bytes(b"".join(" ".join(r).encode() + b"\n" for r in bad))
    with pytest.raises(ValueError, match=r"half\.amat, line 3: expected 0 or 1, got '0\.5'"):
        read_amat(half)
    empty = tmp_path / "empty.amat"
    empty.write_bytes(b"\n")
    with pytest.raises(ValueError, match=r"empty\.amat: empty"):
        read_amat(empty)
    trunc = tmp_path / "trunc.amat.gz"
    trunc.write_bytes(gzip.compress(amat_bytes(rows))[:-30])
    with pytest.raises(ValueError, match=r"trunc\.amat\.gz: truncated or corrupt gzip"):
        read_amat(trunc)


def test_binarized_mnist_labels(tmp_path):
    write_amat(tmp_path, "test", rand_bits(3))
    labels = tmp_path / "binarized_mnist" / "binarized_mnist_test_labels.txt"
    labels.write_text("0\n7\n9\n")
    assert load_dataset("binarized_mnist", "test", root=tmp_path).tensors[1].tolist() == [0, 7, 9]
    labels.write_text("0\n7\n")
    with pytest.raises(ValueError, match=r"test_labels\.txt: has 2 labels but the images "
                                         r"file has 3 images"):
        load_dataset("binarized_mnist", "test", root=tmp_path)
    labels.unlink()
    assert len(load_dataset("binarized_mnist", "test", root=tmp_path).tensors) == 1
    with pytest.warns(UserWarning, match="no public original"):
        load_dataset("binarized_mnist", "test", root=tmp_path, download=True)


def test_idx_errors(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    path = tmp_path / "trunc-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:-100])
    with pytest.raises(ValueError, match=r"trunc-idx3-ubyte: truncated IDX file: header dims "
                                         r"\(3, 28, 28\) need 2368 bytes, file has 2268"):
        read_idx(path)
    path.write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(ValueError, match=r"trunc-idx3-ubyte: bad IDX magic number: "
                                         r"expected 2051 \(0x00000803\), got 2049"):
        read_idx(path, expected_magic=2051)
    path.write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
    gz = tmp_path / "x-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(images))[:40])
    with pytest.raises(ValueError, match=r"x-idx3-ubyte\.gz: truncated or corrupt gzip"):
        read_idx(gz)
    write_mnist(tmp_path, "t10k", images, np.array([1, 2]), gz=True)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz has 3 images but "
                                         r".*t10k-labels-idx1-ubyte\.gz has 2 labels"):
        load_dataset("mnist", "test", root=tmp_path)
    write_mnist(tmp_path, "t10k", images, np.array([1, 2, 3]))  # plain files, preferred
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: bad IDX magic number"):
        load_dataset("mnist", "test", root=tmp_path)


def test_mat_errors(tmp_path):
    path = tmp_path / "f.mat"
    scipy.io.savemat(path, {"faces": np.zeros((560, 1965), np.uint8)})
    with pytest.raises(ValueError, match=r"f\.mat: MATLAB file has no variable 'ff'"):
        read_frey(path)
    scipy.io.savemat(path, {"ff": np.zeros((560, 10), np.uint8)})
    with pytest.raises(ValueError, match=r"'ff' should be uint8 of shape \(560, 1965\), "
                                         r"got uint8 \(560, 10\)"):
        read_frey(path)
    scipy.io.savemat(path, {"ff": np.zeros((560, 1965), np.float64)})
    with pytest.raises(ValueError, match=r"got float64 \(560, 1965\)"):
        read_frey(path)
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match=r"f\.mat: cannot read MATLAB file"):
        read_frey(path)


# ---------------------------------------------------------------- root resolution


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_DEEPGEN_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "pyro_deepgen"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "pyro_deepgen"
    write_amat(tmp_path / "xdg" / "pyro_deepgen", "valid", rand_bits(1))
    assert len(load_dataset("binarized_mnist", "valid")) == 1
    monkeypatch.setenv("PYRO_DEEPGEN_DATA", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"
    write_amat(tmp_path / "env", "valid", rand_bits(2))
    assert len(load_dataset("binarized_mnist", "valid")) == 2
    write_amat(tmp_path / "arg", "valid", rand_bits(3))
    assert len(load_dataset("binarized_mnist", "valid", root=tmp_path / "arg")) == 3
    assert len(load_dataset("binarized_mnist", "valid", root=str(tmp_path / "arg"))) == 3


def test_tests_read_the_data_root_that_readme_names(tmp_path, monkeypatch):
    from conftest import REPO, data_root, require_data_root

    monkeypatch.delenv("PYRO_DEEPGEN_DATA", raising=False)
    assert data_root() == REPO.parent / "shared" / "data"
    monkeypatch.setenv("PYRO_DEEPGEN_DATA", str(tmp_path))
    assert data_root() == tmp_path == default_root()
    assert require_data_root() == tmp_path
    monkeypatch.setenv("PYRO_DEEPGEN_DATA", str(tmp_path / "missing"))
    with pytest.raises(pytest.fail.Exception, match=r"missing is not a folder.*Set PYRO_DEEPGEN_DATA"):
        require_data_root()


# ---------------------------------------------------------------- download


def test_download_from_file_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = amat_bytes(rand_bits(4))
    (mirror / "binarized_mnist_valid.amat").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    dead = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setitem(dl.MIRRORS, "binarized_mnist", (dead, mirror.as_uri()))
    monkeypatch.setitem(dl.CHECKSUMS, "binarized_mnist_valid.amat", ("sha256", digest))
    root = tmp_path / "root"
    ds = load_dataset("binarized_mnist", "valid", root=root, download=True)
    assert ds.tensors[0].shape == (4, 784)
    assert sorted(os.listdir(root / "binarized_mnist")) == ["binarized_mnist_valid.amat"]
    assert (root / "binarized_mnist" / "binarized_mnist_valid.amat").read_bytes() == data


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "frey_rawface.mat").write_bytes(b"tampered")
    monkeypatch.setitem(dl.MIRRORS, "frey", (mirror.as_uri() + "/",))
    root = tmp_path / "root"
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(ChecksumError, match=f"frey_rawface.mat: expected sha256 "
                                            f"{dl.CHECKSUMS['frey_rawface.mat'][1]}, got {actual}"):
        load_dataset("frey", root=root, download=True)
    assert os.listdir(root / "freyfaces") == []


def test_download_all_mirrors_fail(tmp_path, monkeypatch):
    urls = [(tmp_path / d).as_uri() + "/" for d in ("a", "b")]
    monkeypatch.setitem(dl.MIRRORS, "mnist", tuple(urls))
    with pytest.raises(DownloadError) as e:
        load_dataset("mnist", "test", root=tmp_path / "root", download=True)
    for u in urls:
        assert u + "t10k-images-idx3-ubyte.gz" in str(e.value)
    assert os.listdir(tmp_path / "root" / "mnist") == []


def test_recorded_checksums_match_shared_copies(shared_data):
    # The binarized-MNIST originals are uncompressed: their SHA-256 is of the gunzipped bytes.
    for split in ("train", "valid", "test"):
        data = gzip.decompress((shared_data / "binarized_mnist" / f"binarized_mnist_{split}.amat.gz")
                               .read_bytes())
        assert len(data) == 1568 * (50000 if split == "train" else 10000)
        algo, digest = dl.CHECKSUMS[f"binarized_mnist_{split}.amat"]
        assert hashlib.new(algo, data).hexdigest() == digest
    algo, digest = dl.CHECKSUMS["frey_rawface.mat"]
    frey = (shared_data / "freyfaces" / "frey_rawface.mat").read_bytes()
    assert hashlib.new(algo, frey).hexdigest() == digest
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-labels-idx1-ubyte.gz"):
        algo, digest = dl.CHECKSUMS[name]
        assert hashlib.new(algo, (shared_data / "mnist" / name).read_bytes()).hexdigest() == digest


def test_download_real_mnist_md5(tmp_path, monkeypatch, shared_data):
    monkeypatch.setitem(dl.MIRRORS, "mnist", ((shared_data / "mnist").as_uri(),))
    x, y = load_dataset("mnist", "test", root=tmp_path, download=True).tensors
    assert x.shape == (10000, 784) and y.shape == (10000,)
    assert sorted(os.listdir(tmp_path / "mnist")) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


# ---------------------------------------------------------------- binarization


def test_dynamic_binarization():
    ds = load_dataset("digits", "valid", binarize="dynamic")
    assert isinstance(ds, DynamicBinarizedDataset)
    assert isinstance(ds, torch.utils.data.TensorDataset)
    grey = load_dataset("digits", "valid")
    for index in (list(range(50)), torch.arange(50)):
        (a, ya), (b, yb) = ds[index], ds[index]
        assert a.shape == (50, 64) and torch.equal(ya, yb)
        assert torch.equal(ya, grey.tensors[1][:50])
        assert not torch.equal(a, b)
        assert set(torch.cat([a, b]).unique().tolist()) <= {0.0, 1.0}
    x0, y0 = ds[0]
    assert x0.shape == (64,) and y0 == grey.tensors[1][0]
    # Pixels that are exactly 0 or 1 stay so.
    g = grey.tensors[0][:50]
    assert torch.all(a[g == 0] == 0) and torch.all(a[g == 1] == 1)


def test_static_binarization(shared_data):
    a = load_dataset("frey", "test", root=shared_data, binarize="static", seed=3).tensors[0]
    b = load_dataset("frey", "test", root=shared_data, binarize="static", seed=3).tensors[0]
    c = load_dataset("frey", "test", root=shared_data, binarize="static", seed=4).tensors[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    ds = load_dataset("frey", "test", root=shared_data, binarize="static", seed=3)
    assert torch.equal(ds[:10][0], ds[:10][0])
