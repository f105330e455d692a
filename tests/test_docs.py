"""The user's guide stays a guide: README.md is short, names `make test`, speaks of the
product rather than of its development, and every relative link in it and in docs/ leads
to a file that exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT = 15_000

# [text](target) and ![alt](target); the target ends at whitespace or ')' (an optional
# "title" after a space is ignored). Code spans and fenced blocks are removed first.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//|#)", re.I)


def relative_links(path: Path) -> list:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not EXTERNAL.match(t)]


def test_link_parser_finds_links_and_skips_code(tmp_path):
    sample = tmp_path / "sample.md"
    sample.write_text("[a](docs/x.md) ![pic](images/p.jpg) [web](https://example.org) [here](#top)\n"
                      "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n[t](y.md \"title\")\n", encoding="utf-8")
    assert relative_links(sample) == ["docs/x.md", "images/p.jpg", "y.md"]


def test_readme_is_at_most_15000_characters():
    size = len(README.read_text(encoding="utf-8"))
    assert size <= README_LIMIT, f"README.md has {size} characters; the limit is {README_LIMIT}"


def test_readme_names_make_test():
    assert "make test" in README.read_text(encoding="utf-8")


def test_readme_does_not_speak_of_sessions():
    assert "session" not in README.read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("path", [README] + DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path):
    missing = []
    for target in relative_links(path):
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if file_part and not (path.parent / file_part).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_links_every_doc():
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in DOCS if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"
