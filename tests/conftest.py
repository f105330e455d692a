"""Shared fixtures. Tests run with OMP_NUM_THREADS=1 (see Makefile) and tiny widths."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

REFERENCE_GRAPHS = ROOT.parent / "shared" / "reference" / "graphs"
