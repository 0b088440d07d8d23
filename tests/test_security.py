"""Static checks: no unsafe deserialisation of files a user or an attacker controls, no credentials in the
repository, and none in a job's log or artefacts.

The deserialisation checks parse the Python (and the notebooks' code cells) instead of grepping, so that a
comment or a string mentioning torch.load does not count and a call spread over several lines does.
"""
import ast
import json
import os
import re
import subprocess

import pytest

from conftest import FAST_HPS, ROOT, make_dataset, run_local_train

SCANNED = ("code", "medimg", "scripts", "tests", "benchmarks")

# Deliberate exceptions, each with the reason. Only tests may appear here, never code/, medimg/ or scripts/.
UNSAFE_LOAD_ALLOWED = {
    "tests/test_inference.py": "shows that a pickled model.pth runs code when loaded with weights_only=False",
}


def python_sources():
    """(relative path, source) of every .py file under SCANNED, and every notebook's code."""
    for top in SCANNED:
        for dirpath, dirnames, names in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    with open(path, encoding="utf-8") as fh:
                        yield os.path.relpath(path, ROOT), fh.read()
    for name in sorted(os.listdir(ROOT)):
        if name.endswith(".ipynb"):
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


def repository_files():
    """Tracked files, and new ones git does not ignore (what the next commit would hold)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sorted({p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))})


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
    files = repository_files()
    assert "code/train.py" in files
    found = []
    for path in files:
        with open(os.path.join(ROOT, path), "rb") as fh:
            blob = fh.read()
        if b"\0" in blob[:8192]:
            continue  # binary (the .npz sample data)
        found += [f"{path}: {kind}" for kind in secrets_in(blob.decode("utf-8", "replace"))]
    assert not found, found


@pytest.mark.slow
def test_credentials_in_the_environment_never_reach_the_log_or_artefacts(tmp_path):
    """A job whose environment holds AWS credentials (as a developer's shell does) prints none of them."""
    data = make_dataset(tmp_path / "data", counts={"train": 12, "val": 4})
    marker_secret, marker_token = "MarkerSecretValue0123456789abcdefXYZ/+Kq", "MarkerSessionToken" + "x" * 120
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=marker_secret, AWS_SESSION_TOKEN=marker_token)
    work = tmp_path / "work"
    result = run_local_train(data, work, FAST_HPS + ["epochs=1"], env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    texts = {"stdout": result.stdout + result.stderr}
    for dirpath, _, names in os.walk(work):
        if "/code" in dirpath or "/input/data" in dirpath:
            continue
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    texts[os.path.relpath(path, work)] = fh.read().decode("utf-8", "replace")
    assert "logs/train.log" in texts and "model/model_config.json" in texts
    leaks = [where for where, text in texts.items() if marker_secret in text or marker_token in text]
    assert not leaks, leaks
