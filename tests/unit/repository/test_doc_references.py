"""The documentation names tests as proof (`tests/unit/code/test_pixels.py::test_...`, or `test_resume.py::test_...`
in docs/RELIABILITY.md's tables): every such name must be a tracked file that defines that test, so a moved or
renamed test cannot leave the claim pointing at nothing."""
import ast
import os
import re

import pytest

from conftest import ROOT
from repository import tracked_files

PATH_REFERENCE = re.compile(r"(?<![\w/.])(tests/[\w/]+\.py)(?:::(\w+))?")
BARE_REFERENCE = re.compile(r"(?<![\w/.])(test_\w+\.py)::(\w+)")


def documents():
    return ["README.md"] + [p for p in tracked_files() if p.startswith("docs/") and p.endswith(".md")]


def defined_names(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def broken_references(text, files):
    """References in ``text`` to a test file that is not among ``files`` (tracked paths), or to a name it does not
    define; a bare ``test_x.py::name`` is the test module of that basename."""
    by_basename = {os.path.basename(p): p for p in files if p.startswith("tests/")}
    broken = []
    for path, name in PATH_REFERENCE.findall(text):
        if path not in files or (name and name not in defined_names(path)):
            broken.append(f"{path}::{name}" if name else path)
    for basename, name in BARE_REFERENCE.findall(text):
        path = by_basename.get(basename)
        if path is None or name not in defined_names(path):
            broken.append(f"{basename}::{name}")
    return broken


@pytest.mark.parametrize("document", documents())
def test_every_test_the_documentation_names_exists(document):
    with open(os.path.join(ROOT, document), encoding="utf-8") as fh:
        broken = broken_references(fh.read(), set(tracked_files()))
    assert not broken, f"{document} names tests that do not exist (moved or renamed?): {broken}"


def test_a_moved_or_renamed_test_is_caught():
    files = {"tests/unit/repository/test_doc_references.py", "tests/unit/repository/test_docs.py"}
    good = ("`tests/unit/repository/test_doc_references.py::test_a_moved_or_renamed_test_is_caught`, "
            "`test_docs.py::test_the_layout_tree_names_every_file`, `tests/unit/repository/test_docs.py`")
    assert broken_references(good, files) == []
    bad = "`tests/test_docs.py`, `test_docs.py::test_gone`, `test_elsewhere.py::test_a`"
    assert broken_references(bad, files) == ["tests/test_docs.py", "test_docs.py::test_gone",
                                             "test_elsewhere.py::test_a"]
