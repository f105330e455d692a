"""Shared fixtures. Tests run with OMP_NUM_THREADS=1 (see Makefile) and tiny widths."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

# The release graphs' parameter tables (11 configurations), kept with the tests.
REFERENCE_GRAPHS = ROOT / "tests" / "data" / "reference" / "graphs"

# Property tests explore new random inputs on every local run; CI (CI=true) replays a fixed
# derandomised sequence so a landing never depends on the luck of the draw.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(params=["auto", "baseline"])
def kernels(request):
    """Runs a test with the best compiled kernels this CPU runs, then with the baseline ones."""
    from insightface_align.symbols import ext

    ext.load()
    before = ext.isa()
    ext.set_isa(request.param)
    yield ext.isa()
    ext.set_isa(before)
