"""The API reference site: its pages are current and it builds with warnings as errors."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_api_pages_are_current():
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "api" / "generate.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docs_cite_only_files_of_the_repository():
    """No doc or docstring points at the developers' notes outside the repository."""
    bad = []
    for path in list((ROOT / "dyadsim").rglob("*.py")) + list((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        text = path.read_text()
        for word in ("THEORY.md", "NGSPICE.md", "STYLE.md", "../shared"):
            if word in text:
                bad.append(f"{path.relative_to(ROOT)}: {word}")
    assert not bad, bad


@pytest.mark.slow
def test_sphinx_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-q", "-W", "--keep-going",
                        "-b", "html", str(ROOT / "docs"), str(tmp_path / "html")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert (tmp_path / "html" / "api" / "dynamics.html").exists()
