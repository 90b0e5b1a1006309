"""dyadsim.experiments, and its old names under dyadsim.training.

Each import check runs in a fresh interpreter (a subprocess), so that no earlier test
can have imported a submodule first and hide a failure (the lazy ``__getattr__`` of
``dyadsim.training`` used to recurse without end in exactly that situation).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> str:
    """Run ``code`` in a new Python process importing this checkout; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    return r.stdout


def test_attribute_access_in_a_fresh_interpreter():
    out = run_fresh("""
        import sys
        import dyadsim.training as t
        assert "dyadsim.experiments" not in sys.modules   # loaded only when asked for
        fn = t.run_experiment
        import dyadsim.experiments as e
        assert fn is e.run_experiment and t.EXPERIMENTS is e.EXPERIMENTS
        assert t.experiments.EXPERIMENTS is e.EXPERIMENTS
        assert t.experiments.run_experiment is e.run_experiment
        print(sorted(t.EXPERIMENTS))
    """)
    assert out.split() == ["['accuracy',", "'analog',", "'dynamic-range',", "'hardware',",
                           "'precision',", "'steps']"]


def test_experiments_attribute_first():
    run_fresh("""
        import dyadsim.training as t
        m = t.experiments
        assert m is t.experiments and m.__name__ == "dyadsim.training.experiments"
        assert set(m.__all__) >= {"EXPERIMENTS", "run_experiment", "accuracy", "steps"}
        assert t.EXPERIMENTS is m.EXPERIMENTS
    """)


def test_star_import_in_a_fresh_interpreter():
    run_fresh("""
        from dyadsim.training import *
        import dyadsim.experiments as e
        assert run_experiment is e.run_experiment and EXPERIMENTS is e.EXPERIMENTS
        assert callable(train) and History is not None
    """)


@pytest.mark.parametrize("stmt", [
    "from dyadsim.training.experiments import EXPERIMENTS, run_experiment",
    "from dyadsim.experiments import EXPERIMENTS, run_experiment",
    "from dyadsim.training import EXPERIMENTS, run_experiment",
    "import dyadsim.training.experiments as m; EXPERIMENTS, run_experiment = m.EXPERIMENTS, m.run_experiment",
])
def test_every_old_and_new_import_path(stmt):
    run_fresh(f"""
        {stmt}
        import dyadsim.experiments as e
        assert EXPERIMENTS is e.EXPERIMENTS and run_experiment is e.run_experiment
    """)


def test_unknown_attribute_is_an_attribute_error():
    run_fresh("""
        import dyadsim.training as t
        try:
            t.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise SystemExit("no AttributeError")
        assert not hasattr(t, "also_missing")
    """)


def test_experiments_importable_first():
    """dyadsim.experiments imported before anything else (it imports training, which must
    not import it back at import time)."""
    run_fresh("""
        import dyadsim.experiments as e
        import dyadsim.training as t
        assert t.run_experiment is e.run_experiment
    """)


def test_one_module_per_experiment():
    import dyadsim.experiments as e

    for name, fn in e.EXPERIMENTS.items():
        stem = name.replace("-", "_")  # CLI names use '-', Python names '_'
        assert fn.__name__ == stem
        assert fn.__module__ == f"dyadsim.experiments._{stem}"
    assert e.DEPTH9 == "64-64x8-10" and e.EULER_STEP_BUDGET[1.0] == 18
