"""The layers of dyadsim, checked on the source (no import of the package needed).

Stages, bottom first (a module may import only from its own subpackage or from a stage
*below* its own; two subpackages of one stage are independent of each other)::

    errors, _validate, _util, _io  <  network, datasets  <  dynamics  <  circuits  <  simulator
      <  readout  <  training, montecarlo  <  experiments  <  cli  <  demo

and, for every module of the package:

(a) no import of a stage above its own (the top-level ``dyadsim/__init__.py`` is the
    front door and may import anything);
(b) across subpackages only public names: no ``from ..x._private import``, no
    ``from ..x import _name``;
(c) no import of the root package ``dyadsim`` itself (``import dyadsim``,
    ``from dyadsim import mlp``, ``from .. import mlp``): that makes a cycle through the
    front door.

Function-level (lazy) imports count like any other.  The checker below walks the AST of
every module; a second test runs the equivalent import-linter contract
(``[tool.importlinter]`` in pyproject.toml) when ``lint-imports`` is installed.  Both are
shown to catch a planted violation in a synthetic package.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dyadsim"

#: bottom first; a set is one stage.  The first stage is one group: its modules are the
#: package's shared internals and may import each other.
STAGES = (
    {"errors", "_validate", "_util", "_io"},
    {"network", "datasets"},
    {"dynamics"},
    {"circuits"},
    {"simulator"},
    {"readout"},
    {"training", "montecarlo"},
    {"experiments"},
    {"cli"},
    {"demo"},
)

#: (importer module, imported stage): imports allowed against (a)
ALLOW_UPWARD = {
    # the old home of the experiments, kept working: a lazy __getattr__ (run_experiment,
    # EXPERIMENTS) and a module re-exporting dyadsim.experiments (dyadsim.training.experiments)
    ("dyadsim.training", "experiments"): "lazy shim to dyadsim.experiments",
    ("dyadsim.training.experiments", "experiments"): "module shim to dyadsim.experiments",
}

#: (importer module, imported module): imports allowed against (b).  None: keep it so.
ALLOW_PRIVATE: dict = {}

#: modules allowed to import the root package, against (c).  None: keep it so.
ALLOW_ROOT_IMPORT: dict = {}


# ----------------------------------------------------------------------------- the checker
def find_modules(src: Path, package: str) -> dict:
    """``{dotted module name: path}`` of every module of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "__pycache__" in parts:
            continue
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, modules: dict, package: str):
    """``(lineno, target module, imported name or None)`` for every import of the package
    in one module.  ``from M import n`` is an import of ``M.n`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == package or target.startswith(package + ".")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, target, alias.name


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def check_package(src: Path, package: str = PACKAGE, stages=STAGES, *, allow_upward=(),
                  allow_private=(), allow_root=()) -> list:
    """Every violation of the rules (a), (b), (c) in ``src/package``, as readable lines."""
    modules = find_modules(src, package)
    rank = {unit: k for k, stage in enumerate(stages) for unit in stage}
    group = {unit: (0 if k == 0 else unit) for unit, k in rank.items()}
    problems = []

    def unit_of(mod):
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 else None

    for mod in modules:
        u = unit_of(mod)
        if u is not None and u not in rank:
            problems.append(f"{mod}: {package}.{u} is in no stage (add it to STAGES)")
    for mod, path in modules.items():
        ui = unit_of(mod)
        for line, target, name in _imports(mod, path, modules, package):
            where = f"{path.relative_to(src)}:{line}"
            what = target + (f" ({name})" if name else "")
            if target == package:
                if ui is not None and mod not in allow_root:
                    problems.append(f"{where}: {mod} imports the root package {package} "
                                    f"(import {name or package}): (c)")
                continue
            ut = unit_of(target)
            if ut not in rank:
                problems.append(f"{where}: {mod} imports {target}, in no stage")
                continue
            if ui is None or ui == ut:
                continue  # the front door, or inside one subpackage
            # (a) layers
            if group[ui] != group[ut] and (mod, ut) not in allow_upward:
                if rank[ut] > rank[ui]:
                    problems.append(f"{where}: {mod} (stage {ui}) imports {what} from the higher "
                                    f"stage {ut}: (a)")
                elif rank[ut] == rank[ui]:
                    problems.append(f"{where}: {mod} (stage {ui}) imports {what} from its "
                                    f"independent peer {ut}: (a)")
            # (b) only public names across subpackages
            below = target.split(".")[2:]
            if (any(_is_private(p) for p in below) or (name is not None and _is_private(name))) \
                    and (mod, target) not in allow_private:
                problems.append(f"{where}: {mod} imports the private {what} of another "
                                "subpackage: (b)")
    return problems


# ----------------------------------------------------------------------------- the package
def test_every_stage_exists():
    modules = find_modules(ROOT, PACKAGE)
    units = {m.split(".")[1] for m in modules if "." in m}
    assert units == set().union(*STAGES)


def test_dyadsim_keeps_its_layers():
    problems = check_package(ROOT, allow_upward=ALLOW_UPWARD, allow_private=ALLOW_PRIVATE,
                             allow_root=ALLOW_ROOT_IMPORT)
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_allow_lists_are_not_stale():
    """Every allowed exception is still needed: when its import goes, its entry must too."""
    strict = check_package(ROOT)
    for (mod, stage) in ALLOW_UPWARD:
        assert any(f" {mod} (stage " in p and f"stage {stage}: (a)" in p for p in strict), \
            f"ALLOW_UPWARD entry {(mod, stage)} is no longer needed: remove it"
    for (mod, target) in ALLOW_PRIVATE:
        assert any(f" {mod} imports the private {target}" in p for p in strict), \
            f"ALLOW_PRIVATE entry {(mod, target)} is no longer needed: remove it"
    for mod in ALLOW_ROOT_IMPORT:
        assert any(f" {mod} imports the root package" in p for p in strict), \
            f"ALLOW_ROOT_IMPORT entry {mod} is no longer needed: remove it"


# ----------------------------------------------------------------------------- planted violations
FAKE_STAGES = ({"errors"}, {"low"}, {"mid", "peer"}, {"high"})


def _fake_tree(tmp_path, files: dict) -> Path:
    for rel, text in {"pkg/__init__.py": "from .low import f\n", "pkg/errors.py": "",
                      "pkg/low/__init__.py": "from ._impl import f\n",
                      "pkg/low/_impl.py": "from ..errors import *\ndef f(): pass\n_g = 1\n",
                      "pkg/mid/__init__.py": "from ..low import f\n",
                      "pkg/peer/__init__.py": "", "pkg/high/__init__.py": "from ..mid import *\n",
                      **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path


def test_clean_fake_tree_passes(tmp_path):
    assert check_package(_fake_tree(tmp_path, {}), "pkg", FAKE_STAGES) == []


@pytest.mark.parametrize("module,text,rule", [
    ("pkg/low/_impl.py", "def f():\n    from ..mid import x\n", "(a)"),  # lazy upward import
    ("pkg/low/_impl.py", "import pkg.high\n", "(a)"),
    ("pkg/mid/__init__.py", "from ..peer import y\n", "(a)"),  # peers are independent
    ("pkg/mid/__init__.py", "from ..low._impl import f\n", "(b)"),
    ("pkg/mid/__init__.py", "from ..low import _g\n", "(b)"),
    ("pkg/mid/__init__.py", "from pkg.low._impl import f\n", "(b)"),
    ("pkg/mid/__init__.py", "import pkg\n", "(c)"),
    ("pkg/mid/__init__.py", "from pkg import f\n", "(c)"),
    ("pkg/mid/__init__.py", "def g():\n    from .. import f\n", "(c)"),
])
def test_planted_violation_is_reported(tmp_path, module, text, rule):
    src = _fake_tree(tmp_path, {module: text})
    problems = check_package(src, "pkg", FAKE_STAGES)
    assert len(problems) == 1 and problems[0].endswith(rule), problems


def test_allow_lists_and_unstaged_modules(tmp_path):
    src = _fake_tree(tmp_path, {"pkg/low/_impl.py": "from ..high import h\n",
                                "pkg/mid/__init__.py": "import pkg\n"})
    assert len(check_package(src, "pkg", FAKE_STAGES)) == 2
    assert check_package(src, "pkg", FAKE_STAGES, allow_upward={("pkg.low._impl", "high")},
                         allow_root={"pkg.mid"}) == []
    (src / "pkg" / "stray.py").write_text("")
    assert check_package(src, "pkg", FAKE_STAGES, allow_upward={("pkg.low._impl", "high")},
                         allow_root={"pkg.mid"}) == ["pkg.stray: pkg.stray is in no stage (add it to STAGES)"]
    # the package's own modules, below a subpackage, may import each other privately
    src2 = _fake_tree(tmp_path / "b", {"pkg/low/__init__.py": "from ._impl import f, _g\n"})
    assert check_package(src2, "pkg", FAKE_STAGES) == []


# ----------------------------------------------------------------------------- import-linter
def _linter_version():
    from importlib import metadata

    try:
        return tuple(int(p) for p in metadata.version("import-linter").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return None


LINT_IMPORTS = shutil.which("lint-imports")
#: the contracts use the private_modules type and overlapping forbidden modules (2.17 tested)
needs_linter = pytest.mark.skipif(
    LINT_IMPORTS is None or (_linter_version() or (0,)) < (2, 17),
    reason="import-linter >= 2.17 is not installed (pip install 'import-linter>=2.17')")


def _lint(cwd: Path, pythonpath: Path, config: Path):
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run([LINT_IMPORTS, str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@needs_linter
def test_import_linter_contracts_are_kept():
    r = _lint(ROOT, ROOT, ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.lower().replace("0 broken", "")


@needs_linter
def test_import_linter_catches_a_planted_violation(tmp_path):
    src = _fake_tree(tmp_path, {"pkg/low/_impl.py": "def f():\n    from ..mid import x\n"})
    cfg = tmp_path / "lint.toml"
    cfg.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "pkg"

        [[tool.importlinter.contracts]]
        name = "stages"
        type = "layers"
        containers = ["pkg"]
        layers = ["high", "mid | peer", "low", "errors"]
    """))
    r = _lint(tmp_path, src, cfg)
    assert r.returncode != 0 and "pkg.low._impl -> pkg.mid" in r.stdout, r.stdout + r.stderr
    (src / "pkg" / "low" / "_impl.py").write_text("def f(): pass\n")
    r = _lint(tmp_path, src, cfg)
    assert r.returncode == 0, r.stdout + r.stderr
