"""Sphinx configuration of the dyadsim documentation (API reference built from the
docstrings, plus the Markdown pages in this folder).

Build:  python -m sphinx -W --keep-going -b html docs docs/_build/html
(the test suite builds it the same way, warnings as errors: tests/test_docs.py).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "dyadsim"
author = "the dyadsim developers"
copyright = "2026, the dyadsim developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "figures/*.csv", "figures/*.json"]

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_preprocess_types = False

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autosummary_generate = False
myst_heading_anchors = 3
# "ref.python": an attribute name shared by two result classes (x, m) is ambiguous to
# Sphinx's implicit cross-references; each class documents its own
suppress_warnings = ["myst.header", "ref.python"]
html_theme = "alabaster"
