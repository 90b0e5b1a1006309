"""Write the API reference pages (one per pipeline stage) from each stage's ``__all__``.

    python docs/api/generate.py          # rewrite docs/api/<stage>.rst
    python docs/api/generate.py --check  # exit 1 if a page is out of date (the tests run this)

A name is documented on the page of the stage that defines it; a stage that re-exports
another stage's name lists it with a link instead, so every object has one home.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

STAGES = [
    ("errors", "Exceptions and warnings"),
    ("network", "Network graph"),
    ("datasets", "Data sets"),
    ("dynamics", "Dynamics: backprop, energy, Euler and continuous relaxation, methods"),
    ("circuits", "Circuits: the IR, netlisters and compilers"),
    ("simulator", "Simulator: ngspice backends and results"),
    ("readout", "Readout and comparison"),
    ("training", "Training"),
    ("montecarlo", "Monte Carlo"),
    ("experiments", "Experiments"),
]


def _home(obj, default):
    mod = getattr(obj, "__module__", None) or ""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "dyadsim" else default


def page(stage: str, title: str) -> str:
    modname = f"dyadsim.{stage}"
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        return ""
    names = list(getattr(mod, "__all__", []))
    head = f"{modname}: {title}"
    lines = [head, "=" * len(head), "", f".. automodule:: {modname}", "   :no-members:", ""]
    own, foreign, data = [], [], []
    for name in names:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            home = _home(obj, stage)
            (own if home == stage or home.startswith("_") else foreign).append((name, obj, home))
        else:
            data.append(name)
    for name, obj, _ in own:
        if inspect.isclass(obj):
            lines += [f".. autoclass:: {modname}.{name}", "   :members:", "   :show-inheritance:", ""]
        else:
            lines += [f".. autofunction:: {modname}.{name}", ""]
    if data:
        lines += ["Constants", "---------", ""]
        for name in data:
            obj = getattr(mod, name)
            if isinstance(obj, dict):
                desc = "a dict of " + ", ".join(f"``{k}``" for k in obj)
            elif isinstance(obj, (tuple, list, frozenset, set)):
                desc = "one of " + ", ".join(f"``{k}``" for k in obj)
            else:
                desc = f"``{obj!r}``"
            lines.append(f"- ``{modname}.{name}``: {desc}")
        lines.append("")
    if foreign:
        lines += ["Also available here", "-------------------", ""]
        for name, obj, home in foreign:
            role = "class" if inspect.isclass(obj) else "func"
            lines.append(f"- ``{name}``: :{role}:`dyadsim.{home}.{name}`")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for stage, title in STAGES:
        text = page(stage, title)
        if not text:
            continue
        path = HERE / f"{stage}.rst"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python docs/api/generate.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
