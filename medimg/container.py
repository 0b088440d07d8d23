"""code/'s contract modules, loaded from the very files that ship to SageMaker, so the client never keeps a copy.

``layout`` (channels, class-name folders, label_dict.json, manifests, image extensions), ``epoch_log`` (the log
lines and their CloudWatch metric definitions) and ``splits`` (held-out splits, by patient) import only the standard
library (tests/unit/repository/test_architecture.py checks it), so they load here by path, under this package's name, without
putting ``code/`` on ``sys.path`` (where its flat module names, ``utils`` first, would shadow others). ``metrics``
(NumPy only) loads the same way on demand, so that a harness computes a metric by train.py's own definition.

``images`` (the decoder: the notebook's figures show what the model is given) imports ``errors``, which imports
``utils`` (and torch): those load first, as ``medimg.container.utils`` and ``medimg.container.errors``, and the flat
names its ``import`` statements use point at them only while they execute; ``sys.modules`` is restored after, so
nothing of code/ is importable by its flat name from the client. ``model_def`` (the registry: torchvision's weights
file names) and ``weights_channel`` (the checks a job runs on its weights file) load the same way, so the notebook
stages the file the job will accept (medimg.weights).
"""
import importlib.util
import os
import sys

CODE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "code")
CONTRACTS = ("layout", "epoch_log", "splits")
NUMPY_ONLY = ("metrics", "shards")  # the metric definitions (NumPy only): loaded on demand, for the benchmarks' harness
# loaded on demand with the code/ modules they import, in import order (tests/unit/repository/test_architecture.py checks the list)
WITH_CODE_IMPORTS = {"images": ("utils", "errors"), "model_def": (),
                     "channels": ("utils", "errors", "layout", "shards"),
                     "weights_channel": ("utils", "errors", "model_def")}
LOADABLE = CONTRACTS + NUMPY_ONLY + tuple(WITH_CODE_IMPORTS)
_ABSENT = object()


def load(name):
    """``code/<name>.py`` as the module ``medimg.container.<name>`` (loaded once), with the code/ modules it
    imports (WITH_CODE_IMPORTS) under this package's name too."""
    if name not in LOADABLE:
        raise ValueError(f"{name!r} is not one of the code/ modules the client loads {LOADABLE}")
    dependencies = WITH_CODE_IMPORTS.get(name, ())
    saved = {flat: sys.modules.get(flat, _ABSENT) for flat in dependencies}
    try:
        for dependency in dependencies:  # its flat name is what the next module's import statement finds
            sys.modules[dependency] = _load_file(dependency)
        return _load_file(name)
    finally:
        for flat, module in saved.items():
            if module is _ABSENT:
                sys.modules.pop(flat, None)
            else:
                sys.modules[flat] = module


def _load_file(name):
    qualified = f"{__name__}.{name}"
    if qualified not in sys.modules:
        path = os.path.join(CODE_DIR, f"{name}.py")
        if not os.path.isfile(path):
            raise ImportError(f"{path} not found: medimg works from its repository checkout (pip install -e . "
                              "from the repository root)")
        spec = importlib.util.spec_from_file_location(qualified, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[qualified]
            raise
    return sys.modules[qualified]


layout = load("layout")
epoch_log = load("epoch_log")
splits = load("splits")
