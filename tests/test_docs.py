"""The documentation holds together: every relative link in README.md and docs/*.md reaches a file
of the repository (and an anchor reaches a heading of that file), the README stays a short front
door, its two commands stay exactly as CI runs them, and the node reference covers every input."""
import re
from pathlib import Path

import pytest

from hypernet_studio.nodes import NODE_CLASS_MAPPINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOC_PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
TORCH_NOTE = "Install PyTorch for your platform first"
README_COMMANDS = (
    "python -m pip install -e . && hypernet-studio run workflows/txt2img.json",
    'python -m pip install -e ".[test]" && python -m pytest -q',
)

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, where links and headings are real."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text lowercased, punctuation other than
    '-' and '_' dropped, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; a repeated heading gets -1, -2... as on GitHub."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(text: str) -> list[str]:
    """The link targets of a Markdown text that point inside the repository (not in code)."""
    prose = INLINE_CODE.sub("", "\n".join(_prose_lines(text)))  # a link's text may wrap
    return [target for target in LINK.findall(prose) if not EXTERNAL.match(target)]


def broken_links(page: Path, root: Path = REPO_ROOT) -> list[str]:
    problems = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists() or not linked.is_relative_to(root):
            problems.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in heading_anchors(linked)):
            problems.append(f"{target}: no heading #{anchor} in {linked.relative_to(root)}")
    return problems


def test_the_link_checker_finds_links_and_slugs_as_github_does(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## `.pt`: A1111's layout\n\n## Title\n\n```bash\n# not a heading\n"
                    "[not a link](nowhere.md)\n```\n[here](#pt-a1111s-layout) [there](#title-1) "
                    "![pic](pic.png) `[code](gone.md)` [web](https://example.com) [a\nwrapped](#missing)\n",
                    encoding="utf-8")
    assert heading_anchors(page) == {"title", "pt-a1111s-layout", "title-1"}
    assert relative_links(page.read_text(encoding="utf-8")) == [
        "#pt-a1111s-layout", "#title-1", "pic.png", "#missing"]
    assert broken_links(page, tmp_path) == ["pic.png: no such file", "#missing: no heading #missing in page.md"]
    assert github_slug("Apply Hypernet (`HN_ApplyHypernet`)") == "apply-hypernet-hn_applyhypernet"
    assert github_slug("max_side: memory and picture size") == "max_side-memory-and-picture-size"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), broken_links(page)


def test_the_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_keeps_its_two_commands_after_the_torch_note():
    text = README.read_text(encoding="utf-8")
    command_lines = {line.strip() for line in text.splitlines()}
    for command in README_COMMANDS:
        assert command in command_lines, f"README.md lost the command: {command}"
    assert TORCH_NOTE in text
    assert text.index(TORCH_NOTE) < min(text.index(command) for command in README_COMMANDS)


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_the_node_reference_names_every_input(node_id):
    reference = (REPO_ROOT / "docs" / "nodes.md").read_text(encoding="utf-8")
    sections = re.split(r"^#{2,3} ", reference, flags=re.MULTILINE)
    section = next((s for s in sections if f"`{node_id}`" in s.splitlines()[0]), None)
    assert section is not None, f"docs/nodes.md has no heading naming {node_id}"
    declared = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    names = [name for group in ("required", "optional") for name in declared.get(group, {})]
    missing = [name for name in names if not re.search(rf"\b{re.escape(name)}\b", section)]
    assert not missing, f"docs/nodes.md does not describe {node_id}'s inputs {missing}"
