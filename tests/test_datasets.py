"""Tests for dyadsim.datasets (fast; no downloads)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import dyadsim.datasets as ds
from dyadsim.errors import DyadsimError

# ----------------------------------------------------------------------------- helpers

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as an IDX file (big-endian header and data)."""
    arr = np.asarray(arr)
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    code = _CODES[np.dtype(be)]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(be).tobytes(order="C")


def write_idx(path, arr, gz=False):
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_mnist_folder(folder, *, n_train=12, n_test=5, rows=4, cols=3, gz=False, seed=0):
    """Write a tiny MNIST-format folder; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    # make sure 0 and 255 occur so the scaling is exercised at both ends
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 0
    arrays["train-images-idx3-ubyte"][0, 0, 1] = 255
    for name, arr in arrays.items():
        write_idx(folder / name, arr, gz=gz)
    return arrays


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits0():
    return ds.digits(seed=0)


def test_digits_shapes(digits0):
    d = digits0
    assert d.name == "digits"
    assert d.n_features == 64 and d.n_classes == 10
    assert d.n_train + d.n_test == 1797
    assert d.x_train.shape == (d.n_train, 64) and d.x_test.shape == (d.n_test, 64)
    assert d.y_train.shape == (d.n_train, 10) and d.y_test.shape == (d.n_test, 10)
    assert d.x_train.dtype == np.float64
    assert d.labels_train.dtype.kind == "i"
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert d.x_train.max() == 1.0  # 16/16 occurs
    assert abs(d.n_test - 0.25 * 1797) <= 1


def test_digits_one_hot(digits0):
    d = digits0
    for y, lab in ((d.y_train, d.labels_train), (d.y_test, d.labels_test)):
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)
        assert set(np.unique(y)) == {0.0, 1.0}
        np.testing.assert_array_equal(y.argmax(axis=1), lab)


def test_digits_not_one_hot_and_dtype():
    d = ds.digits(seed=0, one_hot=False, dtype=np.float32)
    assert d.y_train.shape == (d.n_train,)
    np.testing.assert_array_equal(d.y_train, d.labels_train)
    assert d.x_train.dtype == np.float32
    assert not d.one_hot


def test_digits_split_deterministic(digits0):
    again = ds.digits(seed=0)
    np.testing.assert_array_equal(again.x_train, digits0.x_train)
    np.testing.assert_array_equal(again.labels_test, digits0.labels_test)
    other = ds.digits(seed=1)
    assert other.n_train == digits0.n_train
    assert not np.array_equal(other.x_train, digits0.x_train)


def test_digits_stratified(digits0):
    d = digits0
    counts_test = np.bincount(d.labels_test, minlength=10)
    counts_all = counts_test + np.bincount(d.labels_train, minlength=10)
    assert (counts_test > 0).all()
    # stratified: each class's test share is the overall share, up to rounding
    np.testing.assert_allclose(counts_test / counts_all, 0.25, atol=0.02)


def test_digits_bad_args():
    with pytest.raises(DyadsimError, match="test_size"):
        ds.digits(test_size=1.5)
    with pytest.raises(DyadsimError, match="floating dtype"):
        ds.digits(dtype=np.int32)


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, gz):
    arrays = make_mnist_folder(tmp_path, gz=gz)
    d = ds.mnist(tmp_path)
    assert d.name == "mnist"
    assert d.n_features == 12 and d.n_classes == 10
    assert d.x_train.shape == (12, 12) and d.x_test.shape == (5, 12)
    np.testing.assert_allclose(
        d.x_train, arrays["train-images-idx3-ubyte"].reshape(12, -1) / 255.0
    )
    np.testing.assert_allclose(d.x_test, arrays["t10k-images-idx3-ubyte"].reshape(5, -1) / 255.0)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    np.testing.assert_array_equal(d.labels_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.labels_test, arrays["t10k-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.y_train.argmax(axis=1), d.labels_train)


def test_fashion_mnist_and_load(tmp_path):
    make_mnist_folder(tmp_path, gz=True)
    d = ds.fashion_mnist(str(tmp_path), one_hot=False, dtype=np.float32)
    assert d.name == "fashion_mnist" and d.x_train.dtype == np.float32
    assert d.y_train.shape == (12,)
    d2 = ds.load("fashion-mnist", path=tmp_path)
    np.testing.assert_allclose(d2.x_train, d.x_train, rtol=1e-6)


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.arange(-5, 5, dtype=np.int8),
        np.arange(6, dtype=np.int16).reshape(3, 2) - 3,
        np.arange(6, dtype=np.int32) * 100000,
        np.linspace(0, 1, 7, dtype=np.float32),
        np.linspace(-1, 1, 8).reshape(2, 2, 2),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_dtypes(tmp_path, arr, gz):
    p = write_idx(tmp_path / "a-idx", arr, gz=gz)
    out = ds.read_idx(p)
    assert out.shape == arr.shape
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_idx_bad_magic(tmp_path):
    make_mnist_folder(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(p.read_bytes())
    raw[0:2] = b"\x08\x03"
    p.write_bytes(bytes(raw))
    with pytest.raises(DyadsimError, match="bad magic") as exc:
        ds.mnist(tmp_path)
    assert "train-labels-idx1-ubyte" in str(exc.value)


def test_idx_unknown_type_code(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(struct.pack(">BBBBI", 0, 0, 0x07, 1, 3) + b"abc")
    with pytest.raises(DyadsimError, match="type code 0x07"):
        ds.read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    make_mnist_folder(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte"
    raw = p.read_bytes()[:-7]
    p.unlink()
    if gz:
        p = p.with_name(p.name + ".gz")
        p.write_bytes(gzip.compress(raw))
    else:
        p.write_bytes(raw)
    with pytest.raises(DyadsimError, match="truncated") as exc:
        ds.mnist(tmp_path)
    msg = str(exc.value)
    assert "t10k-images-idx3-ubyte" in msg and "(5, 4, 3)" in msg


def test_idx_truncated_header_and_tiny(tmp_path):
    p = tmp_path / "h"
    p.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 3, 10))  # 3 dims, only one given
    with pytest.raises(DyadsimError, match="truncated in its header"):
        ds.read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DyadsimError, match="truncated"):
        ds.read_idx(p)


def test_idx_trailing_bytes(tmp_path):
    p = write_idx(tmp_path / "t", np.zeros(4, dtype=np.uint8))
    p.write_bytes(p.read_bytes() + b"\x00\x00")
    with pytest.raises(DyadsimError, match="2 unexpected trailing"):
        ds.read_idx(p)


def test_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "c.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros(100, dtype=np.uint8)))[:20])
    with pytest.raises(DyadsimError, match="gzip") as exc:
        ds.read_idx(p)
    assert "c.gz" in str(exc.value)


def test_mnist_count_mismatch(tmp_path):
    make_mnist_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DyadsimError, match="size mismatch") as exc:
        ds.mnist(tmp_path)
    msg = str(exc.value)
    assert "12 images" in msg and "11 labels" in msg and "train-labels-idx1-ubyte" in msg


def test_mnist_wrong_shape_and_label_range(tmp_path):
    make_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 12), dtype=np.uint8))
    with pytest.raises(DyadsimError, match="must be 3-D"):
        ds.mnist(tmp_path)
    make_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(5, 10, dtype=np.uint8))
    with pytest.raises(DyadsimError, match="label 10"):
        ds.mnist(tmp_path)


def test_mnist_missing_file(tmp_path):
    make_mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DyadsimError) as exc:
        ds.mnist(tmp_path)
    msg = str(exc.value)
    assert "missing file t10k-labels-idx1-ubyte" in msg
    for name in ds.MNIST_FILES:  # lists the expected names
        assert name in msg


def test_mnist_missing_folder(tmp_path):
    with pytest.raises(DyadsimError, match="does not exist") as exc:
        ds.mnist(tmp_path / "nope")
    assert "train-images-idx3-ubyte" in str(exc.value)
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(DyadsimError, match="not a folder"):
        ds.mnist(f)
    with pytest.raises(DyadsimError, match="not found"):
        ds.read_idx(tmp_path / "absent-idx1-ubyte")


# ----------------------------------------------------------------------------- toys


def test_xor_noiseless_labels():
    d = ds.xor(n=200, noise=0.0, seed=3, one_hot=False)
    assert d.name == "xor" and d.n_features == 2 and d.n_classes == 2
    assert d.n_train + d.n_test == 200
    for x, lab in ((d.x_train, d.labels_train), (d.x_test, d.labels_test)):
        np.testing.assert_array_equal(lab, (x[:, 0] * x[:, 1] < 0).astype(int))
    assert set(np.unique(d.labels_train)) == {0, 1}
    assert set(np.unique(d.labels_test)) == {0, 1}


def test_xor_noisy_and_deterministic():
    a = ds.xor(n=100, noise=0.1, seed=0)
    b = ds.xor(n=100, noise=0.1, seed=0)
    c = ds.xor(n=100, noise=0.1, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.y_train.shape == (a.n_train, 2)
    np.testing.assert_array_equal(a.y_train.argmax(1), a.labels_train)
    # noise is small, so most labels still agree with the quadrant rule
    x = np.vstack([a.x_train, a.x_test])
    lab = np.concatenate([a.labels_train, a.labels_test])
    assert ((x[:, 0] * x[:, 1] < 0) == lab).mean() > 0.8


def test_moons():
    d = ds.moons(n=200, noise=0.1, seed=0)
    assert d.name == "moons" and d.n_features == 2 and d.n_classes == 2
    assert d.n_train == 150 and d.n_test == 50
    assert d.y_train.shape == (150, 2)
    assert set(np.unique(d.labels_test)) == {0, 1}
    np.testing.assert_array_equal(np.bincount(np.concatenate([d.labels_train, d.labels_test])), [100, 100])
    e = ds.moons(n=200, noise=0.1, seed=0)
    np.testing.assert_array_equal(d.x_test, e.x_test)


def test_toy_bad_args():
    with pytest.raises(DyadsimError, match="noise"):
        ds.xor(noise=-1)
    with pytest.raises(DyadsimError, match="n: expected"):
        ds.moons(n=2.5)


# ----------------------------------------------------------------------------- load


def test_load_by_name():
    d = ds.load("moons", n=40, seed=2)
    assert d.name == "moons" and d.n_train + d.n_test == 40
    assert ds.load("XOR").name == "xor"


def test_load_errors():
    with pytest.raises(DyadsimError) as exc:
        ds.load("cifar10")
    msg = str(exc.value)
    assert "cifar10" in msg
    for name in ("digits", "mnist", "fashion_mnist", "xor", "moons"):
        assert name in msg
    with pytest.raises(DyadsimError, match="does not take argument"):
        ds.load("xor", bogus=1)
    with pytest.raises(DyadsimError, match="needs argument.*path"):
        ds.load("mnist")


# ----------------------------------------------------------------------------- Dataset


@pytest.fixture(scope="module")
def small():
    return ds.xor(n=103, seed=0, test_size=0.25)  # 77 train: batches of 10 leave 7


def test_batches_cover_each_sample_once(small):
    n = small.n_train
    seen = []
    sizes = []
    for x, y in small.batches(10, seed=5):
        assert x.shape[0] == y.shape[0]
        assert x.shape[1] == 2 and y.shape[1] == 2
        sizes.append(len(x))
        seen.append(x)
    assert sum(sizes) == n and sizes[-1] == n % 10 and len(sizes) == small.n_batches(10)
    got = np.vstack(seen)
    # every training row appears exactly once: same multiset of rows
    key = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(key(got), key(small.x_train))


def test_batches_pairs_stay_aligned(small):
    lookup = {tuple(r): l for r, l in zip(small.x_train, small.labels_train)}
    for x, y in small.batches(16, seed=1, epoch=2):
        for r, t in zip(x, y):
            assert t.argmax() == lookup[tuple(r)]


def test_batches_deterministic_and_epoch_dependent(small):
    def order(seed, epoch):
        return np.vstack([x for x, _ in small.batches(8, seed=seed, epoch=epoch)])

    np.testing.assert_array_equal(order(0, 0), order(0, 0))
    np.testing.assert_array_equal(order(0, 4), order(0, 4))
    assert not np.array_equal(order(0, 0), order(0, 1))
    assert not np.array_equal(order(0, 0), order(1, 0))


def test_batches_no_shuffle_and_errors(small):
    x0 = np.vstack([x for x, _ in small.batches(30, seed=0, shuffle=False)])
    np.testing.assert_array_equal(x0, small.x_train)
    with pytest.raises(DyadsimError, match="batch_size"):
        small.batches(0, seed=0)  # checked eagerly, before iteration
    with pytest.raises(DyadsimError, match="seed"):
        small.batches(4, seed=-1)


def test_subset(digits0):
    s = digits0.subset(n_train=100, n_test=20)
    assert s.n_train == 100 and s.n_test == 20
    assert s.n_classes == 10 and s.n_features == 64 and s.name == "digits"
    np.testing.assert_array_equal(s.x_train, digits0.x_train[:100])
    np.testing.assert_array_equal(s.y_test, digits0.y_test[:20])
    np.testing.assert_array_equal(s.labels_test, digits0.labels_test[:20])
    t = digits0.subset(n_test=10)
    assert t.n_train == digits0.n_train and t.n_test == 10
    with pytest.raises(DyadsimError, match="exceeds"):
        digits0.subset(n_train=10**6)


def test_dataset_frozen_and_repr(small):
    with pytest.raises(AttributeError):
        small.name = "other"
    r = repr(small)
    assert "xor" in r and "n_train=77" in r and len(r) < 200
