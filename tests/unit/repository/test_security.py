"""Static checks on the tracked files: no unsafe deserialisation of files a user or an attacker controls, no
credentials in the repository (none in a job's log or artefacts: tests/system/test_credentials_in_jobs.py).

The deserialisation checks parse the Python (and the notebooks' code cells) instead of grepping, so that a
comment or a string mentioning torch.load does not count and a call spread over several lines does.
"""
import ast
import json
import os
import re

from conftest import ROOT
from repository import tracked_files

SCANNED = ("code", "medimg", "scripts", "tests", "benchmarks")

# Deliberate exceptions, each with the reason. Only tests may appear here, never code/, medimg/ or scripts/.
UNSAFE_LOAD_ALLOWED = {
    "tests/system/test_inference.py": "shows that a pickled model.pth runs code when loaded with weights_only=False",
}


def python_sources():
    """(relative path, source) of every tracked .py file under SCANNED, and every tracked notebook's code."""
    files = tracked_files()
    for path in files:
        if path.endswith(".py") and path.split("/", 1)[0] in SCANNED:
            with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
                yield path, fh.read()
    for name in files:
        if name.endswith(".ipynb") and "/" not in name:
            with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
                cells = [c for c in json.load(fh)["cells"] if c["cell_type"] == "code"]
            lines = ["".join(c["source"]) for c in cells]
            code = "\n".join(lines)
            # IPython magics and shell escapes are not Python: blank them, keeping line numbers
            code = "\n".join("" if ln.lstrip().startswith(("!", "%")) else ln for ln in code.splitlines())
            yield name, code


def dotted(node):
    """'torch.load' for the expression torch.load, 'np.load' for np.load, None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expression>"
    return "<absent>"


def unsafe_calls(path, source):
    """Every call that can run code from a file's content, as 'path:line: what'."""
    found = []
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "dill", "joblib"):
            for alias in node.names:
                if alias.name in ("load", "loads", "Unpickler"):
                    found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name} (hides the check)")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func) or ""
        where = f"{path}:{node.lineno}"
        if name == "torch.load":
            weights_only = keyword(node, "weights_only")
            if weights_only is not True:
                found.append(f"{where}: torch.load with weights_only={weights_only}")
        elif name.split(".")[-1] in ("load", "loads", "Unpickler") and name.split(".")[0] in (
                "pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle"):
            found.append(f"{where}: {name}")
        elif name in ("pd.read_pickle", "pandas.read_pickle"):
            found.append(f"{where}: {name}")
        elif name.split(".")[-1] in ("load", "read_array") and keyword(node, "allow_pickle") is True:
            found.append(f"{where}: {name} with allow_pickle=True")
        elif name in ("yaml.load", "yaml.load_all") and keyword(node, "Loader") == "<absent>":
            found.append(f"{where}: {name} without a safe Loader")
    return found


def test_the_scan_sees_every_file():
    names = [p for p, _ in python_sources()]
    for expected in ("code/train.py", "code/utils.py", "medimg/local_train.py", "scripts/local_train.py",
                     "tests/conftest.py", "benchmarks/probe.py"):
        assert expected in names


def test_the_scan_catches_what_it_is_for():
    planted = ("import torch, pickle, numpy as np\n"
               "torch.load(p)\n"
               "torch.load(p, map_location='cpu',\n    weights_only=False)\n"
               "pickle.loads(b)\n"
               "np.load(p, allow_pickle=True)\n"
               "from torch import load\n"
               "torch.load(p, weights_only=True)\n"
               "x = 'torch.load(p)'  # a string is not a call\n")
    found = sorted(unsafe_calls("planted.py", planted), key=lambda f: int(f.split(":")[1]))
    assert found == ["planted.py:2: torch.load with weights_only=<absent>",
                     "planted.py:3: torch.load with weights_only=False",
                     "planted.py:5: pickle.loads",
                     "planted.py:6: np.load with allow_pickle=True",
                     "planted.py:7: from torch import load (hides the check)"]


def test_no_unsafe_deserialisation():
    problems = []
    for path, source in python_sources():
        for problem in unsafe_calls(path, source):
            if path in UNSAFE_LOAD_ALLOWED and "weights_only=False" in problem:
                continue  # a test that demonstrates the danger on purpose
            problems.append(problem)
    assert not problems, "unsafe deserialisation (use torch.load(..., weights_only=True), never pickle):\n" + \
        "\n".join(problems)


def test_allowed_exceptions_are_only_tests_and_still_needed():
    for path in UNSAFE_LOAD_ALLOWED:
        assert path.startswith("tests/"), path
        source = open(os.path.join(ROOT, path), encoding="utf-8").read()
        assert any("weights_only=False" in p for p in unsafe_calls(path, source)), \
            f"{path} no longer needs its exception: remove it from UNSAFE_LOAD_ALLOWED"


# ---------------------------------------------------------------- credentials
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?access_?key['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
    "AWS session token": re.compile(r"(?i)aws_?session_?token['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{100,}"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
}


def secrets_in(text):
    return [kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_the_secret_patterns_catch_real_shapes():
    key_id = "AKIA" + "Q3EXAMPLE7KEY2ID"  # assembled here so that this file holds no key-shaped literal
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
    assert secrets_in(f"id = {key_id}") == ["AWS access key id"]
    assert secrets_in(f"aws_secret_access_key = {secret}") == ["AWS secret access key"]
    assert secrets_in('"AWS_SECRET_ACCESS_KEY": "testing"') == []  # the tests' fake credentials
    assert secrets_in("-----BEGIN " + "RSA PRIVATE KEY-----") == ["private key"]


def test_no_credentials_in_the_repository():
    files = tracked_files()
    assert "code/train.py" in files
    found = []
    for path in files:
        with open(os.path.join(ROOT, path), "rb") as fh:
            blob = fh.read()
        if b"\0" in blob[:8192]:
            continue  # binary (the .npz sample data)
        found += [f"{path}: {kind}" for kind in secrets_in(blob.decode("utf-8", "replace"))]
    assert not found, found
