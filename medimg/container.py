"""code/'s contract modules, loaded from the very files that ship to SageMaker, so the client never keeps a copy.

``layout`` (channels, class-name folders, label_dict.json, manifests, image extensions), ``epoch_log`` (the log
lines and their CloudWatch metric definitions) and ``splits`` (held-out splits, by patient) import only the standard
library (tests/test_architecture.py checks it), so they load here by path, under this package's name, without
putting ``code/`` on ``sys.path`` (where its flat module names, ``utils`` first, would shadow others). ``metrics``
(NumPy only) loads the same way on demand, so that a harness computes a metric by train.py's own definition.
"""
import importlib.util
import os
import sys

CODE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "code")
CONTRACTS = ("layout", "epoch_log", "splits")
NUMPY_ONLY = ("metrics",)  # the metric definitions (NumPy only): loaded on demand, for the benchmarks' harness


def load(name):
    """``code/<name>.py`` as the module ``medimg.container.<name>`` (loaded once)."""
    if name not in CONTRACTS + NUMPY_ONLY:
        raise ValueError(f"{name!r} is not one of code/'s contract modules {CONTRACTS + NUMPY_ONLY}")
    qualified = f"{__name__}.{name}"
    if qualified not in sys.modules:
        path = os.path.join(CODE_DIR, f"{name}.py")
        if not os.path.isfile(path):
            raise ImportError(f"{path} not found: medimg works from its repository checkout (pip install -e . "
                              "from the repository root)")
        spec = importlib.util.spec_from_file_location(qualified, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]


layout = load("layout")
epoch_log = load("epoch_log")
splits = load("splits")
