"""The documentation stays true: README.md and docs/*.md against the code they describe.

* ``docs/methods.md`` holds the output of ``segsam methods`` between two marker comments;
  the test regenerates it (every model is built, so it is marked slow).
* Every relative link in README.md and docs/*.md points to an existing file, and a
  ``#section`` in a link to a Markdown file names one of its headings.
* README.md's first code block holds the two entry points, ``make demo`` and ``make test``.
* README.md's rule table names every rule of the workflow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
METHODS_DOC = DOCS / "methods.md"
BEGIN = "<!-- BEGIN segsam methods -->"
END = "<!-- END segsam methods -->"

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_RULE = re.compile(r"^\s*(?:use\s+)?rule\s+(?:\w+\s+as\s+)?(\w+)", re.MULTILINE)


def markdown_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The Markdown text without its fenced code blocks (links inside code are not links)."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings."""
    return {slug(h) for h in _HEADING.findall(prose(path.read_text(encoding="utf-8")))}


def methods_block(text: str) -> str:
    """The text between the two marker comments of docs/methods.md."""
    assert BEGIN in text and END in text, f"{METHODS_DOC} lacks the markers {BEGIN} ... {END}"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


@pytest.mark.slow
def test_methods_table_is_the_output_of_segsam_methods() -> None:
    from segsam.cli import methods_table

    documented = methods_block(METHODS_DOC.read_text(encoding="utf-8"))
    assert documented == methods_table().strip(), (
        f"{METHODS_DOC.relative_to(REPO)} is out of date: paste the output of `segsam methods` between its markers"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(path: Path) -> None:
    broken = []
    for target in _LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"


def test_every_docs_page_is_in_the_index() -> None:
    index = prose((DOCS / "README.md").read_text(encoding="utf-8"))
    linked = {Path(t.partition("#")[0]).name for t in _LINK.findall(index)}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


def test_readme_starts_with_the_two_entry_points() -> None:
    block = _FENCE.search(README.read_text(encoding="utf-8"))
    assert block is not None, "README.md has no code block"
    commands = [line.split("#")[0].strip() for line in block.group(0).splitlines()[1:-1]]
    assert "make demo" in commands and "make test" in commands, block.group(0)


def test_readme_rule_table_names_every_rule() -> None:
    rules = {
        name
        for smk in (REPO / "workflow" / "rules").glob("*.smk")
        for name in _RULE.findall(smk.read_text(encoding="utf-8"))
    }
    assert rules, "no rules found under workflow/rules"
    readme = README.read_text(encoding="utf-8")
    missing = sorted(rule for rule in rules if f"`{rule}`" not in readme)
    assert not missing, f"README.md's rule table lacks {missing}"
