"""train.py refuses a data channel in Pipe input mode (a named pipe per channel, which it cannot read) with one line
naming the mode; File and FastFile channels are read as files. The mode comes from SM_INPUT_DATA_CONFIG, which the
training toolkit (SDK v2's container) and SDK v3's drivers both set from the platform's inputdataconfig.json."""
import json
import os
import subprocess
import sys

import pytest

import hyperparameters
from errors import ConfigError

PIPE_LINE = ("the channel {!r} is in Pipe input mode (a stream through a named pipe), which train.py cannot read: "
             "it reads files; start the job with input_mode File or FastFile")


def environ(modes, tmp_path):
    config = {name: {"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
              for name, mode in modes.items()}
    env = {"SM_CHANNELS": json.dumps(sorted(modes)), "SM_INPUT_DATA_CONFIG": json.dumps(config),
           "SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "out")}
    env.update({f"SM_CHANNEL_{name.upper()}": str(tmp_path / name) for name in modes})
    return env


@pytest.mark.parametrize("modes,refused", [
    ({"train": "Pipe"}, "train"),
    ({"train": "FastFile", "val": "Pipe"}, "val"),
    ({"training": "File", "testing": "Pipe"}, "testing"),  # aliases are data channels too
])
def test_a_data_channel_in_pipe_mode_is_refused_in_one_line(modes, refused, tmp_path):
    with pytest.raises(ConfigError) as err:
        hyperparameters.parse_args([], environ=environ(modes, tmp_path))
    assert str(err.value) == PIPE_LINE.format(refused)


@pytest.mark.parametrize("modes", [{"train": "File", "val": "File"}, {"train": "FastFile", "test": "FastFile"},
                                   {"train": "FastFile", "code": "Pipe"}])  # a launcher's channel is not data
def test_file_and_fastfile_channels_are_read(modes, tmp_path):
    args = hyperparameters.parse_args([], environ=environ(modes, tmp_path))
    assert args.train == str(tmp_path / "train")


def test_without_the_launchers_config_nothing_is_assumed(tmp_path):
    env = environ({"train": "File"}, tmp_path)
    del env["SM_INPUT_DATA_CONFIG"]  # train.py run by hand
    assert hyperparameters.parse_args([], environ=env).train == str(tmp_path / "train")
    with pytest.raises(ConfigError, match=r"SM_INPUT_DATA_CONFIG='\[1\]' is not a JSON object; it is set by"):
        hyperparameters.parse_args([], environ=dict(env, SM_INPUT_DATA_CONFIG="[1]"))


TOOLKIT_ENV = """
import json, sys
from sagemaker_training import environment
resource = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo",
            "current_instance_type": "local", "current_group_name": "homogeneousCluster",
            "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local",
                                 "hosts": ["algo-1"]}]}
channels = {name: {"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
            for name, mode in json.loads(sys.argv[1]).items()}
env = environment.Environment(resource_config=resource, input_data_config=channels,
                              hyperparameters={"sagemaker_program": "train.py"})
json.dump(env.to_env_vars(), sys.stdout)
"""


@pytest.mark.slow  # a process: the toolkit makes folders under SAGEMAKER_BASE_DIR when imported
def test_the_training_toolkits_own_environment_names_the_mode(tmp_path):
    """The variables the toolkit itself gives train.py for a job with a Pipe channel."""
    out = subprocess.run([sys.executable, "-c", TOOLKIT_ENV, json.dumps({"train": "Pipe", "val": "FastFile"})],
                         env=dict(os.environ, SAGEMAKER_BASE_DIR=str(tmp_path / "opt_ml")), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    env = json.loads(out.stdout)
    with pytest.raises(ConfigError) as err:
        hyperparameters.parse_args([], environ=dict(env, SM_MODEL_DIR=str(tmp_path / "m")))
    assert str(err.value) == PIPE_LINE.format("train")
