"""medimg.serving calls a model's handlers as the inference toolkit does (sagemaker_inference's
_run_handler_function): model_fn gets a context (system_properties: model_dir and the worker's gpu_id, None on a
CPU host) when it takes one more parameter than model_dir, and model_dir alone otherwise."""
import json
import textwrap

import pytest

from medimg.serving import ModelServer

pytestmark = pytest.mark.slow  # model server processes

HANDLERS = """
import json


def input_fn(body, content_type):
    return bytes(body)


def predict_fn(data, model):
    return model


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


@pytest.fixture
def model_dir(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "with_context.py").write_text(HANDLERS + textwrap.dedent("""
        def model_fn(model_dir, context=None):
            return {"model_dir": model_dir, "system_properties": context.system_properties}
        """))
    (code / "without_context.py").write_text(HANDLERS + textwrap.dedent("""
        def model_fn(model_dir):
            return {"model_dir": model_dir, "arguments": 1}
        """))
    return str(tmp_path)


@pytest.mark.parametrize("gpu_id", [None, 0, 3])
def test_model_fn_gets_the_toolkits_context_with_the_workers_gpu(model_dir, gpu_id):
    with ModelServer(model_dir, "with_context.py", gpu_id=gpu_id) as server:
        status, _, body = server.invoke(b"x", "application/x-image")
    assert status == 200
    assert json.loads(body) == {"model_dir": model_dir, "system_properties": {"model_dir": model_dir,
                                                                              "gpu_id": gpu_id}}


def test_a_model_fn_of_one_parameter_gets_model_dir_alone(model_dir):
    with ModelServer(model_dir, "without_context.py", gpu_id=1) as server:
        status, _, body = server.invoke(b"x", "application/x-image")
    assert (status, json.loads(body)) == (200, {"model_dir": model_dir, "arguments": 1})
