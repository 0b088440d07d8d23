"""The documentation against the code and the repository: README's hyperparameter table is the parser's own
(hyperparameters.markdown_table), its layout tree names every file, and no relative link in README.md or docs/
points to a file or heading that does not exist."""
import os
import re
import subprocess

import pytest

import hyperparameters
from conftest import ROOT

README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
TABLE_START, TABLE_END = "<!-- hyperparameters:start -->", "<!-- hyperparameters:end -->"
REGENERATE = ('python -c "import sys; sys.path.insert(0, \'code\'); import hyperparameters; '
              'print(hyperparameters.markdown_table())"')
# data, not code or documentation: not required in the layout tree
DATA_SUFFIXES = (".npz", ".npy", ".csv", ".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff")
DATA_FOLDERS = ("benchmarks/results/",)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def repository_files():
    """Tracked files, and new ones git does not ignore (what the next commit would hold), that exist."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sorted({p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))})


def layout_tree(text):
    """The paths README's "## Layout" code block names: two spaces of indent per folder level; a name that ends
    with / is a folder; the first word of a line is the name, the rest its description."""
    section = text.split("\n## Layout\n", 1)[1]
    block = section.split("```", 2)[1]
    folders, paths = [], set()
    for line in block.splitlines()[1:]:  # the first line is what follows the opening fence
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        folders = folders[:depth]
        path = "".join(folders) + name
        if name.endswith("/"):
            folders.append(name)
        paths.add(path)
    return paths


def anchors(text):
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped, spaces as hyphens;
    a repeated heading gets -1, -2, ...); headings inside fenced code blocks are not headings."""
    found, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def markdown_files():
    names = sorted(n for n in os.listdir(DOCS) if n.endswith(".md")) if os.path.isdir(DOCS) else []
    return [README] + [os.path.join(DOCS, n) for n in names]


def test_readme_holds_the_generated_hyperparameter_table():
    text = read(README)
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1, (
        f"README.md must hold {TABLE_START} and {TABLE_END} once each around the hyperparameter table")
    inside = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip("\n")
    assert inside == hyperparameters.markdown_table(), (
        "README.md's hyperparameter table differs from code/hyperparameters.py's TABLE; regenerate it with\n"
        f"    {REGENERATE}\nand paste the output between {TABLE_START} and {TABLE_END}")


def test_the_table_has_a_row_per_hyperparameter_in_order():
    rows = hyperparameters.markdown_table().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == [flag for _, flag, _ in hyperparameters.TABLE]
    cells = {r.split("`")[1]: r.split(" | ")[1] for r in rows}
    assert (cells["epochs"], cells["augment"], cells["ordinal"], cells["train-steps"]) == ("auto", "true", "false",
                                                                                           "1500")
    assert all("%%" not in r for r in rows)


def test_the_layout_tree_names_every_file():
    listed = layout_tree(read(README))
    required = [p for p in repository_files() if not p.startswith("docs/")
                and not p.lower().endswith(DATA_SUFFIXES) and not p.startswith(DATA_FOLDERS)]
    missing = [p for p in required if p not in listed]
    assert not missing, f"README.md's layout tree (## Layout) lacks {missing}: add one line each, saying what it is"
    stale = sorted(p for p in listed if not p.endswith("/") and not os.path.isfile(os.path.join(ROOT, p)))
    assert not stale, f"README.md's layout tree names files that do not exist: {stale}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_point_to_existing_files(path):
    broken = []
    for target in LINK.findall(read(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # a URL
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(linked):
            broken.append(target)
        elif anchor and linked.endswith(".md") and anchor not in anchors(read(linked)):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{os.path.relpath(path, ROOT)} has links to files or headings that do not exist: {broken}"
