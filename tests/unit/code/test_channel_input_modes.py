"""train.py refuses a data channel in Pipe input mode (a named pipe per channel, which it cannot read) with one line
naming the mode; File and FastFile channels are read as files. The mode comes from SM_INPUT_DATA_CONFIG, which the
training toolkit (SDK v2's container) and SDK v3's drivers both set from the platform's inputdataconfig.json."""
import json

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
