"""The documentation against the code and the repository: README's hyperparameter table is the parser's own
(hyperparameters.markdown_table), its layout tree names every file, and no relative link in README.md or docs/
points to a file or heading that does not exist. They judge the files git tracks (support/repository.py): a file
of the user's own, kept untracked in the checkout, is none of their business."""
import os
import re
import subprocess

import pytest

import hyperparameters
from conftest import ROOT
from repository import tracked_files

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


def markdown_files(root=ROOT):
    """README.md and the tracked Markdown files of docs/."""
    names = [p for p in tracked_files(root) if p.startswith("docs/") and p.count("/") == 1 and p.endswith(".md")]
    return [os.path.join(root, "README.md")] + [os.path.join(root, p) for p in names]


def layout_problems(readme, files, root=ROOT):
    """What README's layout tree gets wrong about ``files`` (the tracked files): those it does not name (data and
    docs/ aside), and the files it names that do not exist."""
    listed = layout_tree(readme)
    required = [p for p in files if not p.startswith("docs/")
                and not p.lower().endswith(DATA_SUFFIXES) and not p.startswith(DATA_FOLDERS)]
    missing = [p for p in required if p not in listed]
    stale = sorted(p for p in listed if not p.endswith("/") and not os.path.isfile(os.path.join(root, p)))
    return missing, stale


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
    missing, stale = layout_problems(read(README), tracked_files())
    assert not missing, f"README.md's layout tree (## Layout) lacks {missing}: add one line each, saying what it is"
    assert not stale, f"README.md's layout tree names files that do not exist: {stale}"


def test_a_users_untracked_file_is_not_judged_and_a_committed_one_is(tmp_path):
    """In a repository of its own: an untracked file (a user's notes, a scratch script, a docs/ page with a dead
    link) changes nothing; the same file once committed must be in the layout tree, and its links must hold."""
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    readme = "# R\n\n## Layout\n\n```\nREADME.md   this page\ntool.py     a tool\n```\n"
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "tool.py").write_text("")
    git("init", "-q")
    git("add", "README.md", "tool.py")
    git("commit", "-q", "-m", "start")
    (tmp_path / "notes.py").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mine.md").write_text("[gone](nowhere.md)")
    assert tracked_files(tmp_path) == ["README.md", "tool.py"]
    assert layout_problems(readme, tracked_files(tmp_path), tmp_path) == ([], [])
    assert markdown_files(tmp_path) == [str(tmp_path / "README.md")]
    git("add", "notes.py", "docs/mine.md")  # staged: what the next commit holds
    assert tracked_files(tmp_path) == ["README.md", "docs/mine.md", "notes.py", "tool.py"]
    assert markdown_files(tmp_path) == [str(tmp_path / "README.md"), str(tmp_path / "docs" / "mine.md")]
    assert layout_problems(readme, tracked_files(tmp_path), tmp_path) == (["notes.py"], [])
    os.remove(tmp_path / "tool.py")
    assert layout_problems(readme, tracked_files(tmp_path), tmp_path) == (["notes.py"], ["tool.py"])


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
