"""The `insightface-align` command: every subcommand answers --help, every option is explained."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from insightface_align.cli import COMMANDS, main


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def parser_of(name: str) -> argparse.ArgumentParser:
    """The subcommand's parser, caught at its parse_args call (nothing runs)."""
    module = importlib.import_module(f"insightface_align.cli.{COMMANDS[name][0]}")

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        module.main([])
    except _Captured as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{name}: main() never parsed its arguments")


def _parsers(parser):
    """The parser and, for commands with sub-commands (bench), each sub-parser."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    for parser in _parsers(parser_of(name)):
        assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter), parser.prog
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            label = action.option_strings[0] if action.option_strings else action.dest
            assert action.help and action.help.strip(), f"{parser.prog} {label}: no help text"
        parser.format_help()  # every %(default)s and %(choices)s expands


def test_dispatcher_lists_commands_and_rejects_unknown(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_m_runs_a_subcommand_help():
    proc = subprocess.run([sys.executable, "-m", "insightface_align", "predict", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: insightface-align predict")
    assert "(default: " in proc.stdout


def test_make_help_lists_every_target():
    import re

    from conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.M))
    help_block = makefile[makefile.index("\nhelp:"):]
    help_block = help_block[:help_block.index("\n\n")]
    listed = set(re.findall(r'@echo "make ([a-z0-9-]+)', help_block))
    assert targets - listed == set(), f"make help does not list: {sorted(targets - listed)}"
    assert listed - targets == set(), f"make help lists missing targets: {sorted(listed - targets)}"
