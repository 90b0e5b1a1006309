"""Every notebook executes top to bottom (small settings), so none can rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

#: notebooks that import torch: skipped (alone) where it is not installed
NEEDS_TORCH = {"torch_models.ipynb"}
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.spice
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    if path.name in NEEDS_TORCH:
        pytest.importorskip("torch")  # honours --without=torch too
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "experiments.ipynb", "torch_models.ipynb"} <= names


def test_notebooks_are_built_from_make_notebooks(tmp_path):
    """The committed notebooks are what notebooks/make_notebooks.py writes (no hand edits)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS[0].parent / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, cells in (("quickstart.ipynb", mod.QUICKSTART), ("experiments.ipynb", mod.EXPERIMENTS),
                        ("torch_models.ipynb", mod.TORCH_MODELS)):
        built = mod.build(cells, Path(name).stem.replace("_", "-"))
        assert nbformat.writes(built).rstrip() == (NOTEBOOKS[0].parent / name).read_text().rstrip(), name
