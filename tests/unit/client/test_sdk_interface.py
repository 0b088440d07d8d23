"""The two SDK builders are one interface: what the notebook calls on ``builder = sdk.module(path)`` is
medimg.sdk.INTERFACE; medimg.sdk_v2 and medimg.sdk_v3 each define every function of it with the same parameters
(names, kinds and defaults, in order), and any other public function that both define takes the same parameters
too, so they cannot drift apart again. Both modules import without their SDK (they import it inside functions),
so this runs in .venv, where SDK v3 is not installed."""
import inspect
import json
import os
import re

from conftest import ROOT
from medimg import sdk, sdk_v2, sdk_v3


def public_functions(module):
    return {name: value for name, value in vars(module).items() if inspect.isfunction(value)
            and value.__module__ == module.__name__ and not name.startswith("_")}


def parameters(function):
    return [(p.name, p.kind.name, None if p.default is p.empty else repr(p.default))
            for p in inspect.signature(function).parameters.values()]


def notebook_code():
    with open(os.path.join(ROOT, "train.ipynb"), encoding="utf-8") as fh:
        cells = json.load(fh)["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_both_builders_define_the_interface_with_the_same_parameters():
    v2, v3 = public_functions(sdk_v2), public_functions(sdk_v3)
    assert not [name for name in sdk.INTERFACE if name not in v2], "missing in medimg/sdk_v2.py"
    assert not [name for name in sdk.INTERFACE if name not in v3], "missing in medimg/sdk_v3.py"
    for name in sdk.INTERFACE:
        assert parameters(v2[name]) == parameters(v3[name]), name
    assert parameters(v2["start_job"]) == [("spec", "POSITIONAL_OR_KEYWORD", None),
                                           ("session", "POSITIONAL_OR_KEYWORD", None),
                                           ("job_name", "KEYWORD_ONLY", "None"), ("wait", "KEYWORD_ONLY", "False")]
    assert [p[0] for p in parameters(v2["deploy"])[:3]] == ["spec", "model_data", "session"]


def test_every_function_both_builders_define_takes_the_same_parameters():
    v2, v3 = public_functions(sdk_v2), public_functions(sdk_v3)
    differ = {name: (parameters(v2[name]), parameters(v3[name])) for name in set(v2) & set(v3)
              if parameters(v2[name]) != parameters(v3[name])}
    assert not differ, differ
    assert set(v2) & set(v3) >= set(sdk.INTERFACE) | {"tuner", "parameter_ranges"}


def test_the_check_sees_a_drift():
    def v2_deploy(spec, model_data, session, *, endpoint_name=None, wait=True):
        pass

    def v3_deploy(spec, model_data_url, session, *, endpoint_name=None, wait=True):
        pass

    def v3_later(spec, model_data, session, *, wait=True, endpoint_name=None):
        pass

    assert parameters(v2_deploy) != parameters(v3_deploy) and parameters(v2_deploy) != parameters(v3_later)


def test_the_notebook_calls_the_interface_and_never_forks_on_the_path_to_do_so():
    code = notebook_code()
    called = set(re.findall(r"\bbuilder\.(\w+)", code))
    assert {"make_session", "execution_role", "start_job", "start_tuning", "deploy", "invoke"} <= called
    assert called <= set(sdk.INTERFACE), called - set(sdk.INTERFACE)
    assert not re.findall(r"\bpath\s*[!=]=", code), "a cell forks on the SDK path: give both builders what it needs"
