"""What every subcommand shares: its help layout and its error style."""
from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's examples as written and appends each option's default
    (unless its help already says what the default is)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower():
            return text
        return super()._get_help_string(action)


def error(message: str, code: int = 2) -> int:
    """Print `error: MESSAGE` on stderr (messages name the file first) and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


def write_generated(path: str, text: str, tag: str) -> None:
    """Put generated markdown into `path` between `<!-- begin: TAG -->` and `<!-- end: TAG -->`
    (the rest of the page is left as written); a page without the markers is replaced."""
    from ..fileio import atomic_write

    begin, end = f"<!-- begin: {tag} -->", f"<!-- end: {tag} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    try:
        with open(path, encoding="utf-8") as f:
            page = f.read()
    except FileNotFoundError:
        page = ""
    if begin in page and end in page and page.index(begin) < page.index(end):
        page = page[:page.index(begin)] + block + page[page.index(end) + len(end):]
    else:
        page = block + "\n"
    atomic_write(path, page, "w")
