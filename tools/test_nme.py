#!/usr/bin/env python
"""Evaluate a checkpoint: NME / failure rate / AUC / CED (see insightface_align/cli/test_nme.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from insightface_align.cli.test_nme import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
