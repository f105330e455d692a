#!/usr/bin/env python
"""Launch a dist_sync training job (see insightface_align/cli/launch_dist.py, or --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from insightface_align.cli.launch_dist import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
