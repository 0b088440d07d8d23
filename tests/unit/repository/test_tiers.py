"""The tests' own layout: every test module lives in a tier folder (tests/unit/code, tests/unit/client,
tests/unit/repository, tests/system), the unit tier holds nothing marked slow (so `make test-fast`, which runs
tests/unit, stays in process and under a minute), tests/support holds no tests, and no two test modules share a
basename (pytest imports them by basename: the second would fail to import)."""
import ast
import collections
import os

from conftest import ROOT
from repository import tracked_files

TIERS = ("tests/unit/code/", "tests/unit/client/", "tests/unit/repository/", "tests/system/")


def collected_test_modules():
    return [p for p in tracked_files() if p.startswith("tests/") and os.path.basename(p).startswith("test_")
            and p.endswith(".py")]


def marks_slow(source):
    """Whether a module's source marks anything slow (pytest.mark.slow, as a decorator, a pytestmark or a name)."""
    return any(isinstance(node, ast.Attribute) and node.attr == "slow" and ast.unparse(node.value).endswith("mark")
               for node in ast.walk(ast.parse(source)))


def test_every_test_module_is_in_a_tier_folder():
    modules = collected_test_modules()
    assert "tests/unit/repository/test_tiers.py" in modules
    outside = [p for p in modules if not p.startswith(TIERS)]
    assert not outside, f"{outside}: move each into one of {TIERS} (tests/support is for what tests import)"


def test_the_unit_tier_marks_nothing_slow():
    slow = []
    for path in collected_test_modules():
        if path.startswith("tests/unit/"):
            with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
                if marks_slow(fh.read()):
                    slow.append(path)
    assert not slow, (f"{slow} mark tests slow: a test that starts a process or trains goes in tests/system/ "
                      "(make test-fast runs tests/unit)")


def test_the_slow_marker_is_seen_however_it_is_written():
    assert marks_slow("import pytest\n@pytest.mark.slow\ndef test_a(): pass\n")
    assert marks_slow("import pytest\npytestmark = [pytest.mark.slow, pytest.mark.torch26]\n")
    assert marks_slow("import pytest\nslow = pytest.mark.slow\n")
    assert not marks_slow("import pytest\npytestmark = pytest.mark.torch26\nslow = 'a word'\n")


def test_test_module_basenames_are_unique():
    counts = collections.Counter(os.path.basename(p) for p in collected_test_modules())
    assert not [name for name, n in counts.items() if n > 1], counts.most_common(3)
