"""Old home of the experiments, kept for old imports: they live in :mod:`dyadsim.experiments`.

The one import of a stage above training (allow-listed in tests/test_layering.py).
"""

from ..experiments import *  # noqa: F401,F403
from ..experiments import __all__  # noqa: F401
