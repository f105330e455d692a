"""What every subcommand shares: its help layout and its error style."""
from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's examples as written and appends each option's default."""


def error(message: str, code: int = 2) -> int:
    """Print `error: MESSAGE` on stderr (messages name the file first) and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code
