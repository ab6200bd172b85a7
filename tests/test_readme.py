"""The README and docs/ stay true: short, every link and command they name exists, no project history.

Pure text checks (no torch, no network): they run in well under a second.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import posekit
from posekit.cli import _COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_BYTES = int(14.5 * 1024)
# Written by other parts of the project (real-time, motion comparison, PoseTrack evaluation); the
# README links them already, so a checkout without them yet is not an error.
ADDED_ELSEWHERE = {"docs/realtime.md", "docs/motion.md", "docs/posetrack.md", "notebooks/07_compare_motion.ipynb"}
HISTORY = ("engineer", "the seed's", "seed figure", "0.1's", "was lent", "the goal was", "this branch", "this release")

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _code(text: str) -> list[str]:
    """The fenced code blocks and inline code spans of a Markdown text."""
    blocks = FENCE.findall(text)
    return blocks + INLINE.findall(FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in FENCE.sub("", path.read_text()).splitlines() if line.startswith("#")}


def test_slug_follows_githubs_rule():
    assert _slug("Colours: BGR vs RGB") == "colours-bgr-vs-rgb"
    assert _slug("Downloads fail: offline, firewall, Google Drive quota") == "downloads-fail-offline-firewall-google-drive-quota"
    assert _slug("The `posekit` CLI") == "the-posekit-cli"


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; move reference material to docs/ (limit {MAX_README_BYTES})"


@pytest.mark.parametrize("document", [README, *DOCS], ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_exists(document: Path):
    missing = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        path = (document.parent / file_part).resolve() if file_part else document
        name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if not path.exists():
            if name not in ADDED_ELSEWHERE:
                missing.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            missing.append(f"{target} (no such heading)")
    assert not missing, f"{document.name} links to what does not exist: {missing}"


def test_the_readme_links_every_document_in_docs():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [path.name for path in DOCS if path not in linked] == []


def test_every_posekit_command_the_readme_names_is_a_subcommand():
    named = {match for code in _code(README.read_text()) for match in re.findall(r"\bposekit[ \t]+([a-z][\w-]*)", code)}
    assert named, "the README shows posekit commands"
    assert sorted(named - set(_COMMANDS)) == []
    # The CLI table has a row for every subcommand.
    table = set(re.findall(r"^\| `posekit ([a-z][\w-]*)", README.read_text(), re.MULTILINE))
    assert table == set(_COMMANDS)


def test_the_python_quickstart_uses_the_top_level_api():
    names = {name for code in _code(README.read_text()) for name in re.findall(r"\bposekit\.([A-Za-z_]\w*)\b", code)}
    top_level = {name for name in names if name not in {"core", "models", "io", "eval", "train", "viz"}}
    assert {"PoseEstimator", "predict", "PoseTracker", "track_video", "draw_skeleton", "WEIGHTS"} <= top_level
    assert sorted(top_level - set(posekit.__all__)) == []


@pytest.mark.parametrize("document", [README, *DOCS], ids=lambda path: path.relative_to(ROOT).as_posix())
def test_written_about_the_product_not_its_history(document: Path):
    text = " ".join(document.read_text().split()).lower()  # line breaks inside a phrase do not hide it
    assert [phrase for phrase in HISTORY if phrase in text] == []
