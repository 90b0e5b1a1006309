"""The :class:`Dataset` container and the dataset loaders."""

from __future__ import annotations

import inspect
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ._idx import read_idx
from ..errors import DyadsimError

__all__ = [
    "Dataset",
    "digits",
    "mnist",
    "fashion_mnist",
    "xor",
    "moons",
    "load",
    "DATASET_NAMES",
    "MNIST_FILES",
]

#: The four standard IDX file names in an MNIST / Fashion-MNIST folder, in the order
#: (train images, train labels, test images, test labels). Each may also carry ``.gz``.
MNIST_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------- helpers


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DyadsimError(f"dtype: {dtype!r} is not a numpy dtype ({exc})") from None
    if not np.issubdtype(dt, np.floating):
        raise DyadsimError(f"dtype: expected a floating dtype (e.g. float64), found {dt}")
    return dt


def _check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DyadsimError(f"{name}: expected an integer, found {value!r}")
    value = int(value)
    if value < minimum:
        raise DyadsimError(f"{name}: expected an integer >= {minimum}, found {value}")
    return value


def _check_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise DyadsimError(f"noise: expected a non-negative number, found {noise!r}")
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise DyadsimError(f"noise: expected a finite number >= 0, found {noise}")
    return noise


def _check_test_size(test_size, n: int):
    """Validate ``test_size`` (fraction in (0, 1) or integer count in [1, n-1])."""
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise DyadsimError(
            f"test_size: expected a fraction in (0, 1) or a sample count, found {test_size!r}"
        )
    if isinstance(test_size, numbers.Integral):
        if not 1 <= test_size <= n - 1:
            raise DyadsimError(
                f"test_size: a sample count must lie in [1, {n - 1}] for {n} samples, "
                f"found {test_size}"
            )
        return int(test_size)
    test_size = float(test_size)
    if not 0.0 < test_size < 1.0:
        raise DyadsimError(f"test_size: a fraction must lie in (0, 1), found {test_size}")
    return test_size


def _one_hot(labels: np.ndarray, n_classes: int, dtype: np.dtype) -> np.ndarray:
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _stratified_split(x, labels, *, test_size, seed, n_classes):
    """Fixed stratified train/test split (scikit-learn) driven by ``seed``."""
    from sklearn.model_selection import train_test_split

    test_size = _check_test_size(test_size, len(labels))
    try:
        return train_test_split(
            x, labels, test_size=test_size, random_state=seed, stratify=labels, shuffle=True
        )
    except ValueError as exc:  # e.g. too few samples per class to stratify
        raise DyadsimError(
            f"cannot make a stratified split of {len(labels)} samples in {n_classes} "
            f"classes with test_size={test_size}: {exc}"
        ) from None


def _build(name, x_train, lab_train, x_test, lab_test, n_classes, one_hot, dtype):
    x_train = np.ascontiguousarray(x_train, dtype=dtype)
    x_test = np.ascontiguousarray(x_test, dtype=dtype)
    lab_train = np.asarray(lab_train, dtype=np.int64)
    lab_test = np.asarray(lab_test, dtype=np.int64)
    if one_hot:
        y_train = _one_hot(lab_train, n_classes, dtype)
        y_test = _one_hot(lab_test, n_classes, dtype)
    else:
        y_train, y_test = lab_train.copy(), lab_test.copy()
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        labels_train=lab_train,
        labels_test=lab_test,
        n_classes=n_classes,
    )


# --------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test classification data set with flattened inputs.

    Attributes
    ----------
    name:
        Short name (``"digits"``, ``"mnist"``, ...).
    x_train, x_test:
        Float inputs of shape ``(N, n_features)``.
    y_train, y_test:
        Targets: one-hot float arrays of shape ``(N, n_classes)`` when the loader was
        called with ``one_hot=True``, otherwise int64 labels of shape ``(N,)``.
    labels_train, labels_test:
        Int64 class labels of shape ``(N,)``, always present.
    n_classes:
        Number of classes.
    n_features:
        Number of input features (``x_train.shape[1]``), derived.
    one_hot:
        Whether ``y_*`` are one-hot (derived from their shape).

    The dataclass is frozen (attributes cannot be reassigned); the arrays themselves are
    ordinary writable numpy arrays owned by this object, so modify them only if you own
    the data set. Equality is identity.
    """

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    labels_train: np.ndarray = field(repr=False)
    labels_test: np.ndarray = field(repr=False)
    n_classes: int
    n_features: int = field(init=False)
    one_hot: bool = field(init=False)

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            lab = getattr(self, f"labels_{part}")
            if not isinstance(x, np.ndarray) or x.ndim != 2:
                raise DyadsimError(
                    f"Dataset {self.name!r}: x_{part} must be a 2-D array (N, features), "
                    f"found shape {np.shape(x)}"
                )
            if not isinstance(lab, np.ndarray) or lab.shape != (x.shape[0],):
                raise DyadsimError(
                    f"Dataset {self.name!r}: labels_{part} must have shape ({x.shape[0]},), "
                    f"found {np.shape(lab)}"
                )
            if not isinstance(y, np.ndarray) or y.shape[:1] != (x.shape[0],) or y.ndim > 2:
                raise DyadsimError(
                    f"Dataset {self.name!r}: y_{part} must have {x.shape[0]} rows, "
                    f"found shape {np.shape(y)}"
                )
            if y.ndim == 2 and y.shape[1] != self.n_classes:
                raise DyadsimError(
                    f"Dataset {self.name!r}: one-hot y_{part} must have {self.n_classes} "
                    f"columns, found {y.shape[1]}"
                )
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise DyadsimError(
                f"Dataset {self.name!r}: x_train has {self.x_train.shape[1]} features but "
                f"x_test has {self.x_test.shape[1]}"
            )
        if self.y_train.ndim != self.y_test.ndim:
            raise DyadsimError(
                f"Dataset {self.name!r}: y_train and y_test must both be one-hot or both "
                f"be labels, found shapes {self.y_train.shape} and {self.y_test.shape}"
            )
        object.__setattr__(self, "n_features", int(self.x_train.shape[1]))
        object.__setattr__(self, "one_hot", self.y_train.ndim == 2)

    # ------------------------------------------------------------------ conveniences

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"one_hot={self.one_hot}, dtype={self.x_train.dtype})"
        )

    def batches(
        self, batch_size: int, seed: int, epoch: int = 0, shuffle: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over the training set in minibatches ``(x, y)``.

        Every training sample appears exactly once per call; the last, partial batch is
        included. With ``shuffle=True`` the order is a permutation drawn from
        ``np.random.default_rng([seed, epoch])``, so it is identical for the same
        ``(seed, epoch)`` and differs between epochs. With ``shuffle=False`` the samples
        come in stored order (``seed`` and ``epoch`` are then unused).

        The arguments are checked when this is called, not when iteration starts. The
        yielded arrays are copies.
        """
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        seed = _check_int("seed", seed, minimum=0)
        epoch = _check_int("epoch", epoch, minimum=0)
        n = self.n_train
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        return self._iter_batches(order, batch_size)

    def _iter_batches(self, order: np.ndarray, batch_size: int):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield self.x_train[idx], self.y_train[idx]

    def n_batches(self, batch_size: int) -> int:
        """Number of minibatches :meth:`batches` yields per epoch for ``batch_size``."""
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        return -(-self.n_train // batch_size)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """Return a smaller Dataset holding the first ``n_train`` / ``n_test`` samples.

        ``None`` keeps the whole split. Asking for more samples than the split holds is
        an error. The returned arrays are copies; ``n_classes`` is unchanged.
        """
        sizes = {}
        for part, n, total in (("train", n_train, self.n_train), ("test", n_test, self.n_test)):
            if n is None:
                sizes[part] = total
                continue
            n = _check_int(f"n_{part}", n, minimum=1)
            if n > total:
                raise DyadsimError(
                    f"n_{part}={n} exceeds the {total} {part} samples of data set {self.name!r}"
                )
            sizes[part] = n
        a, b = sizes["train"], sizes["test"]
        return Dataset(
            name=self.name,
            x_train=self.x_train[:a].copy(),
            y_train=self.y_train[:a].copy(),
            x_test=self.x_test[:b].copy(),
            y_test=self.y_test[:b].copy(),
            labels_train=self.labels_train[:a].copy(),
            labels_test=self.labels_test[:b].copy(),
            n_classes=self.n_classes,
        )


# --------------------------------------------------------------------------- loaders


def digits(seed: int = 0, test_size: float = 0.25, one_hot: bool = True, dtype=np.float64) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 samples, 64 features, 10 classes).

    Bundled with scikit-learn, so no download. Pixel values 0..16 are scaled to [0, 1].
    The split is ``sklearn.model_selection.train_test_split``.

    Parameters
    ----------
    seed : int, optional
        Seed of the stratified train/test split.
    test_size : float or int, optional
        A fraction in (0, 1) or a sample count.
    one_hot : bool, optional
        One-hot float targets ``y_*`` (default) or int64 labels.
    dtype : numpy float dtype, optional
        The dtype of the inputs (and of one-hot targets).

    Returns
    -------
    Dataset
        The train and test splits.
    """
    from sklearn.datasets import load_digits

    seed = _check_int("seed", seed, minimum=0)
    dtype = _check_dtype(dtype)
    bunch = load_digits()
    x = bunch.data.astype(np.float64) / 16.0
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, l_tr, l_te = _stratified_split(
        x, labels, test_size=test_size, seed=seed, n_classes=10
    )
    return _build("digits", x_tr, l_tr, x_te, l_te, 10, one_hot, dtype)


def _find_idx(folder: Path, name: str, dataset: str) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    expected = ", ".join(f"{f}[.gz]" for f in MNIST_FILES)
    raise DyadsimError(
        f"{dataset}: missing file {name} (or {name}.gz) in {folder}; the folder must "
        f"hold the four IDX files: {expected}"
    )


def _load_idx_folder(path, dataset: str, one_hot: bool, dtype) -> Dataset:
    dtype = _check_dtype(dtype)
    if not isinstance(path, (str, os.PathLike)):
        raise DyadsimError(f"{dataset}: path must be a folder path, found {path!r}")
    folder = Path(path).expanduser()
    expected = ", ".join(f"{f}[.gz]" for f in MNIST_FILES)
    if not folder.exists():
        raise DyadsimError(
            f"{dataset}: folder {folder} does not exist; it must hold the four IDX "
            f"files: {expected}"
        )
    if not folder.is_dir():
        raise DyadsimError(
            f"{dataset}: {folder} is not a folder; pass the folder that holds the four "
            f"IDX files: {expected}"
        )
    files = [_find_idx(folder, name, dataset) for name in MNIST_FILES]
    arrays = [read_idx(f) for f in files]
    parts = {}
    for part, (img_f, lab_f, img, lab) in {
        "train": (files[0], files[1], arrays[0], arrays[1]),
        "test": (files[2], files[3], arrays[2], arrays[3]),
    }.items():
        if img.ndim != 3:
            raise DyadsimError(
                f"{dataset}: image file {img_f} must be 3-D (count, rows, cols), found "
                f"shape {img.shape}"
            )
        if lab.ndim != 1:
            raise DyadsimError(
                f"{dataset}: label file {lab_f} must be 1-D (count,), found shape {lab.shape}"
            )
        if img.dtype != np.uint8 or lab.dtype != np.uint8:
            raise DyadsimError(
                f"{dataset}: {part} files must hold unsigned bytes (type code 0x08), found "
                f"{img.dtype} in {img_f.name} and {lab.dtype} in {lab_f.name}"
            )
        if img.shape[0] != lab.shape[0]:
            raise DyadsimError(
                f"{dataset}: size mismatch between {img_f} ({img.shape[0]} images) and "
                f"{lab_f} ({lab.shape[0]} labels)"
            )
        if img.shape[0] == 0:
            raise DyadsimError(f"{dataset}: {img_f} holds no images")
        if lab.max() > 9:
            raise DyadsimError(
                f"{dataset}: label file {lab_f} holds label {int(lab.max())}; expected "
                f"labels 0..9"
            )
        parts[part] = (img.reshape(img.shape[0], -1), lab)
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DyadsimError(
            f"{dataset}: image size mismatch: {files[0]} holds {arrays[0].shape[1:]} images "
            f"but {files[2]} holds {arrays[2].shape[1:]}"
        )
    (x_tr, l_tr), (x_te, l_te) = parts["train"], parts["test"]
    scale = dtype.type(1.0 / 255.0)
    x_tr = x_tr.astype(dtype)
    x_tr *= scale
    x_te = x_te.astype(dtype)
    x_te *= scale
    return _build(dataset, x_tr, l_tr, x_te, l_te, 10, one_hot, dtype)


def mnist(path: str | os.PathLike, one_hot: bool = True, dtype=np.float64) -> Dataset:
    """MNIST from a folder holding the four standard IDX files (plain or ``.gz``).

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally with a
    ``.gz`` suffix (the plain file wins if both exist). Nothing is downloaded. Images are
    flattened to ``(N, rows*cols)`` and scaled to [0, 1]; the split is the official one
    (60000 / 10000 for the real data).

    Parameters
    ----------
    path : str or path-like
        The folder holding the four IDX files.
    one_hot : bool, optional
        One-hot float targets ``y_*`` (default) or int64 labels.
    dtype : numpy float dtype, optional
        The dtype of the inputs (and of one-hot targets).

    Returns
    -------
    Dataset
        The official train and test splits.

    Raises
    ------
    DyadsimError
        Naming the file, if the folder or a file is missing, a file is malformed, or
        image and label counts disagree.
    """
    return _load_idx_folder(path, "mnist", one_hot, dtype)


def fashion_mnist(path: str | os.PathLike, one_hot: bool = True, dtype=np.float64) -> Dataset:
    """Fashion-MNIST from a folder holding the four standard IDX files (plain or ``.gz``).

    Same file names, format, scaling and errors as :func:`mnist`.

    Parameters
    ----------
    path : str or path-like
        The folder holding the four IDX files.
    one_hot : bool, optional
        One-hot float targets ``y_*`` (default) or int64 labels.
    dtype : numpy float dtype, optional
        The dtype of the inputs (and of one-hot targets).

    Returns
    -------
    Dataset
        The official train and test splits.
    """
    return _load_idx_folder(path, "fashion_mnist", one_hot, dtype)


def _split_toy(name, x, labels, *, seed, test_size, one_hot, dtype):
    x_tr, x_te, l_tr, l_te = _stratified_split(
        x, labels, test_size=test_size, seed=seed, n_classes=2
    )
    return _build(name, x_tr, l_tr, x_te, l_te, 2, one_hot, dtype)


def xor(
    n: int = 200,
    noise: float = 0.1,
    seed: int = 0,
    test_size: float = 0.25,
    one_hot: bool = True,
    dtype=np.float64,
) -> Dataset:
    """2-D XOR task: ``n`` points (train + test), 2 features, 2 classes.

    Clean points are drawn uniformly from [-1, 1]^2; the label is the XOR of the sign
    bits, i.e. ``1`` where ``x1 * x2 < 0`` (opposite quadrants) and ``0`` where
    ``x1 * x2 > 0``. Gaussian noise of standard deviation ``noise`` is then added to the
    inputs (labels stay those of the clean points, so with noise some points sit across
    an axis).

    Parameters
    ----------
    n : int, optional
        Number of points, train and test together.
    noise : float, optional
        Standard deviation of the input noise.
    seed : int, optional
        Seed of the points and of the stratified train/test split.
    test_size : float or int, optional
        A fraction in (0, 1) or a sample count.
    one_hot : bool, optional
        One-hot float targets ``y_*`` (default) or int64 labels.
    dtype : numpy float dtype, optional
        The dtype of the inputs (and of one-hot targets).

    Returns
    -------
    Dataset
        The train and test splits.
    """
    n = _check_int("n", n, minimum=4)
    noise = _check_noise(noise)
    seed = _check_int("seed", seed, minimum=0)
    dtype = _check_dtype(dtype)
    rng = np.random.default_rng(seed)
    clean = rng.uniform(-1.0, 1.0, size=(n, 2))
    labels = (clean[:, 0] * clean[:, 1] < 0).astype(np.int64)
    if len(np.unique(labels)) < 2:  # astronomically unlikely for n >= 4; keep it sound
        clean[0] = [0.5, -0.5]
        labels[0] = 1
        clean[1] = [0.5, 0.5]
        labels[1] = 0
    x = clean + noise * rng.standard_normal((n, 2))
    return _split_toy("xor", x, labels, seed=seed, test_size=test_size, one_hot=one_hot, dtype=dtype)


def moons(
    n: int = 200,
    noise: float = 0.1,
    seed: int = 0,
    test_size: float = 0.25,
    one_hot: bool = True,
    dtype=np.float64,
) -> Dataset:
    """Two interleaving half-moons (``sklearn.datasets.make_moons``): ``n`` points
    (train + test), 2 features, 2 classes.

    Parameters
    ----------
    n : int, optional
        Number of points, train and test together.
    noise : float, optional
        Standard deviation of the Gaussian noise.
    seed : int, optional
        Seed of the generation and of the stratified train/test split.
    test_size : float or int, optional
        A fraction in (0, 1) or a sample count.
    one_hot : bool, optional
        One-hot float targets ``y_*`` (default) or int64 labels.
    dtype : numpy float dtype, optional
        The dtype of the inputs (and of one-hot targets).

    Returns
    -------
    Dataset
        The train and test splits.
    """
    from sklearn.datasets import make_moons

    n = _check_int("n", n, minimum=4)
    noise = _check_noise(noise)
    seed = _check_int("seed", seed, minimum=0)
    dtype = _check_dtype(dtype)
    x, labels = make_moons(n_samples=n, noise=noise, random_state=seed, shuffle=True)
    return _split_toy(
        "moons", x, labels.astype(np.int64), seed=seed, test_size=test_size,
        one_hot=one_hot, dtype=dtype,
    )


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "xor": xor,
    "moons": moons,
}

#: Names accepted by :func:`load`.
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load(name: str, **kw) -> Dataset:
    """Load a data set by name.

    Parameters
    ----------
    name : str
        One of ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"xor"``, ``"moons"``
        (case-insensitive; ``-`` is read as ``_``).
    **kwargs
        The loader's keywords; ``"mnist"`` and ``"fashion_mnist"`` need ``path=``.

    Returns
    -------
    Dataset
        What the loader returns.

    Raises
    ------
    DyadsimError
        On an unknown name, an unknown keyword or a missing required keyword.
    """
    if not isinstance(name, str):
        raise DyadsimError(
            f"dataset name must be a string, found {name!r}; valid names: "
            f"{', '.join(DATASET_NAMES)}"
        )
    key = name.strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise DyadsimError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}"
        )
    loader = _LOADERS[key]
    params = inspect.signature(loader).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise DyadsimError(
            f"dataset {key!r} does not take argument(s) {', '.join(unknown)}; it takes: "
            f"{', '.join(params)}"
        )
    missing = [
        p for p, spec in params.items() if spec.default is inspect.Parameter.empty and p not in kw
    ]
    if missing:
        raise DyadsimError(
            f"dataset {key!r} needs argument(s) {', '.join(missing)} "
            f"(e.g. load({key!r}, path='/data/{key}'))"
        )
    return loader(**kw)
