"""The training toolkit's own environment for a job with a Pipe channel: the variables it gives train.py name the mode,
and train.py refuses the channel with one line (tests/unit/code/test_channel_input_modes.py holds the rule)."""
import json
import os
import subprocess
import sys

import pytest

import hyperparameters
from errors import ConfigError

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


pytestmark = pytest.mark.slow  # a process: the toolkit makes folders under SAGEMAKER_BASE_DIR when imported


def test_the_training_toolkits_own_environment_names_the_mode(tmp_path):
    """The variables the toolkit itself gives train.py for a job with a Pipe channel."""
    out = subprocess.run([sys.executable, "-c", TOOLKIT_ENV, json.dumps({"train": "Pipe", "val": "FastFile"})],
                         env=dict(os.environ, SAGEMAKER_BASE_DIR=str(tmp_path / "opt_ml")), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    env = json.loads(out.stdout)
    with pytest.raises(ConfigError) as err:
        hyperparameters.parse_args([], environ=dict(env, SM_MODEL_DIR=str(tmp_path / "m")))
    assert str(err.value).startswith("the channel 'train' is in Pipe input mode"), err.value
