"""Which SageMaker Python SDK major runs the job: ``detect()`` reads the installed ``sagemaker`` distribution's
version (``importlib.metadata``, nothing imported) and returns "v2" or "v3"; ``module()`` gives that path's
builder (``medimg.sdk_v2`` or ``medimg.sdk_v3``, the same ``JobSpec`` in both), ``describe()`` one line saying
which path runs.

    path = sdk.detect(prefer)          # prefer: "auto" (the installed major), "v2" or "v3"
    print(sdk.describe(path))
    builder = sdk.module(path)         # INTERFACE: the same functions and parameters on either path

SDK v2 (< 3) has the ``sagemaker.pytorch`` Estimator; SDK v3 (>= 3, what ``pip install sagemaker`` and current
SageMaker Studio images give) has none of it: ModelTrainer, ``sagemaker.train.tuner`` and sagemaker-core
resources instead (SAGEMAKER_CONTRACT.md, "Versions").
"""
import importlib
import importlib.metadata

PATHS = ("v2", "v3")
# What the notebook calls on ``module(path)``: medimg.sdk_v2 and medimg.sdk_v3 each define all of these with the
# same parameters (tests/unit/client/test_sdk_interface.py), so no cell forks on the path. A function added to one
# builder goes to the other with the same name and parameters.
INTERFACE = ("make_session", "execution_role", "start_job", "model_data", "start_tuning", "deploy", "invoke",
             "invoke_async", "transform", "delete")
# the SDK's own telemetry, off for every session this package makes (both majors read this config)
SAGEMAKER_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
WHAT_RUNS = {
    "v2": "sagemaker.pytorch.PyTorch Estimator (the training toolkit runs train.py), sagemaker.tuner."
          "HyperparameterTuner, PyTorchModel.deploy",
    "v3": "sagemaker.train.ModelTrainer (its sm_train.sh drivers run train.py), sagemaker.train.tuner."
          "HyperparameterTuner, sagemaker-core Model/EndpointConfig/Endpoint",
}


def installed_version():
    """The installed ``sagemaker`` distribution's version string, or None when it is not installed."""
    try:
        return importlib.metadata.version("sagemaker")
    except importlib.metadata.PackageNotFoundError:
        return None


def path_of(version):
    """"v2" for versions below 3, "v3" for 3 and above."""
    return "v2" if int(version.split(".")[0]) < 3 else "v3"


def detect(prefer="auto", version=None):
    """"v2" or "v3": ``prefer`` when it names one (it must match the installed major: the other SDK's classes
    are not there), else the installed one. ``version`` defaults to ``installed_version()``.

    Raises ValueError for an unknown ``prefer`` or one the installed SDK cannot run, RuntimeError when no
    ``sagemaker`` is installed."""
    if prefer not in ("auto",) + PATHS:
        raise ValueError(f"sdk must be 'auto', 'v2' or 'v3', got {prefer!r}")
    version = version or installed_version()
    if version is None:
        raise RuntimeError("the SageMaker Python SDK is not installed: pip install 'sagemaker>=2.257' (v2 or v3)")
    installed = path_of(version)
    if prefer != "auto" and prefer != installed:
        wanted = "'sagemaker>=2.257,<3'" if prefer == "v2" else "'sagemaker>=3,<4'"
        raise ValueError(f"sdk={prefer!r} needs SageMaker Python SDK {prefer}, but {version} is installed: "
                         f"pip install {wanted}, or use sdk='auto'")
    return installed


def describe(path, version=None):
    """One line: which SDK version is installed and what the ``path`` runs."""
    return f"SageMaker Python SDK {version or installed_version()}: the {path} path ({WHAT_RUNS[path]})"


def module(path):
    """The builder module of ``path``: ``medimg.sdk_v2`` or ``medimg.sdk_v3``."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return importlib.import_module(f"medimg.sdk_{path}")


def mlops(path):
    """The Model Registry and Pipelines module of ``path``: ``medimg.mlops_v2`` or ``medimg.mlops_v3`` (the same
    functions: ``register``, ``deploy_package``, ``build_pipeline``, ``run_pipeline``)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return importlib.import_module(f"medimg.mlops_{path}")


QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "sagemaker", "sagemaker.config")
V2_NOTICE = ("SageMaker Python SDK v2 is in maintenance (until 2027-07); v3 is the current major. This notebook runs "
             "either: v2's deprecation messages are shown once, here, instead of at every call.")


def quiet(path):
    """Keep a notebook's cells to what matters: the SDK and botocore loggers at WARNING (their INFO lines repeat
    the SDK config and credential lookups in every cell), nothing logged twice; for SDK v2, its deprecation
    warnings said once in plain words (returns that line) instead of two messages at each first use of a class.
    Call before importing the SDK. Returns the line to show, or None."""
    import logging
    import warnings

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if path != "v2":
        return None
    logging.getLogger("sagemaker.deprecations").setLevel(logging.ERROR)  # its log copy of each warning
    warnings.filterwarnings("ignore", message=r"(?s).*SageMaker Python SDK v2")
    warnings.filterwarnings("ignore", message=r"(?s).*is part of the SageMaker Python SDK v2")
    return V2_NOTICE
