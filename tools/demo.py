#!/usr/bin/env python
"""The end-to-end demo behind `make demo` (see insightface_align/cli/demo.py, or --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from insightface_align.cli.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
