#!/usr/bin/env python
"""Render a synthetic labelled face set (see insightface_align/cli/synth.py, or run with --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from insightface_align.cli.synth import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
