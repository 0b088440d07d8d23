"""Every channel SageMaker hands over is used or refused, never ignored: aliases (validation, training, testing, ...)
name the same splits, the launcher's own channels (SDK v3's code and sm_drivers) are not data, anything else is one
clear line; a train channel that is the data set's root says so."""
import json
import os
import shutil

import pytest

import hyperparameters
from conftest import make_dataset
from errors import ConfigError
from medimg import data_folders
from medimg.data_folders import ChannelError


def sm_env(*names, **extra):
    env = {"SM_CHANNELS": json.dumps(list(names))}
    env.update({f"SM_CHANNEL_{n.upper()}": f"/opt/ml/input/data/{n}" for n in names})
    env.update(extra)
    return env


@pytest.mark.parametrize("names, expected", [
    (("train", "val", "test"), {"train": "train", "val": "val", "test": "test"}),
    (("train", "validation", "test"), {"train": "train", "val": "validation", "test": "test"}),
    (("training", "valid", "testing"), {"train": "training", "val": "valid", "test": "testing"}),
    (("Train", "Validation"), {"train": "Train", "val": "Validation"}),
    (("train", "code", "sm_drivers"), {"train": "train"}),  # SDK v3 ModelTrainer's own channels
    (("train",), {"train": "train"}),
])
def test_channels_and_their_aliases(names, expected):
    got = hyperparameters.channel_paths(sm_env(*names))
    assert got == {role: f"/opt/ml/input/data/{name}" for role, name in expected.items()}
    args = hyperparameters.parse_args([], environ=sm_env(*names))
    assert (args.train, args.val, args.test) == tuple(got.get(r) for r in ("train", "val", "test"))


def test_without_sm_channels_the_sm_channel_variables_are_read():
    env = {"SM_CHANNEL_TRAIN": "/d/train", "SM_CHANNEL_VALIDATION": "/d/validation"}
    assert hyperparameters.channel_paths(env) == {"train": "/d/train", "val": "/d/validation"}
    assert hyperparameters.channel_paths({}) == {}


@pytest.mark.parametrize("names, fragment", [
    (("train", "extra"), "the channel 'extra' is not one train.py reads; it reads train (train or training); "
                         "val (val or validation or valid); test (test or testing)"),
    (("train", "labels"), "the channel 'labels' is not one train.py reads"),
    (("train", "val", "validation"), "the channels 'val' and 'validation' both hold the val split; pass only one"),
    (("train", "training"), "the channels 'train' and 'training' both hold the train split"),
])
def test_other_channels_are_refused_with_one_line(names, fragment):
    with pytest.raises(ConfigError, match="^" + fragment.replace("(", r"\(").replace(")", r"\)")):
        hyperparameters.parse_args([], environ=sm_env(*names))


def test_explicit_paths_win_over_the_channels():
    args = hyperparameters.parse_args(["--val", "/elsewhere/val"], environ=sm_env("train", "validation"))
    assert args.val == "/elsewhere/val"


def test_the_client_uploads_the_channels_train_py_reads(tmp_path):
    data = make_dataset(tmp_path / "d", counts={"train": 2, "val": 1})
    os.rename(os.path.join(data, "val"), os.path.join(data, "validation"))
    assert data_folders.channels_in(data) == ["train", "validation"]
    os.makedirs(os.path.join(data, "scratch"))
    with pytest.raises(ChannelError, match="scratch is not a channel train.py reads"):
        data_folders.channels_in(data)
    os.rmdir(os.path.join(data, "scratch"))
    shutil.copytree(os.path.join(data, "validation"), os.path.join(data, "val"))
    with pytest.raises(ChannelError, match="has both val/ and validation/ for the val split"):
        data_folders.channels_in(data)
