"""Kept for old imports: the validators live in :mod:`dyadsim._validate`."""

from ._validate import check_dtype, check_eta  # noqa: F401
