#!/usr/bin/env python
"""Table 1 of the paper for our recipes (see insightface_align/cli/model_stats.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from insightface_align.cli.model_stats import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
