"""Classification data sets for dyadsim experiments.

Every loader returns a :class:`Dataset` with flattened float inputs, one-hot (or
integer) targets, integer labels and a deterministic minibatch iterator::

    import dyadsim.datasets as ds
    data = ds.digits(seed=0)                 # bundled with scikit-learn, offline
    data = ds.mnist("/data/mnist")           # folder with the four IDX files (.gz ok)
    data = ds.load("moons", n=400, noise=0.2)
    for x, y in data.batches(32, seed=0, epoch=3):
        ...

Nothing is ever downloaded.
"""

from ._data import (
    DATASET_NAMES,
    MNIST_FILES,
    Dataset,
    digits,
    fashion_mnist,
    load,
    mnist,
    moons,
    xor,
)
from ._idx import read_idx

__all__ = [
    "Dataset",
    "digits",
    "mnist",
    "fashion_mnist",
    "xor",
    "moons",
    "load",
    "read_idx",
    "DATASET_NAMES",
    "MNIST_FILES",
]
