#!/usr/bin/env python
"""Pack data sets into RecordIO (see insightface_align/cli/pack.py, or run with --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from insightface_align.cli.pack import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
