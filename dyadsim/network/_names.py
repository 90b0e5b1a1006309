"""Readable names of parameters (for tables, JSON and CSV)."""

from __future__ import annotations

__all__ = ["param_name"]


def param_name(key) -> str:
    """The readable name of a parameter key.

    Parameters
    ----------
    key : tuple
        ``("W", src, dst)`` or ``("b", node)``, as in ``Network.params``.

    Returns
    -------
    str
        ``"W[src->dst]"`` or ``"b[node]"`` (other keys: their parts joined by ``/``).
    """
    if isinstance(key, tuple):
        if key and key[0] == "W" and len(key) == 3:
            return f"W[{key[1]}->{key[2]}]"
        if key and key[0] == "b" and len(key) == 2:
            return f"b[{key[1]}]"
        return "/".join(map(str, key))
    return str(key)
