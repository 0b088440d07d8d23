"""hyperparameters.parse_args: the argv the SageMaker toolkit builds, both boolean spellings, clear errors."""
import pytest

import hyperparameters
from errors import ConfigError

pytestmark = pytest.mark.torch26  # code/'s own checks: make test-torch26 runs them on torch 2.6

ENV = {"SM_MODEL_DIR": "/opt/ml/model", "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
       "SM_CHANNEL_VAL": "/opt/ml/input/data/val", "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
       "SM_OUTPUT_DIR": "/opt/ml/output"}


def parse(*argv, environ=None):
    return hyperparameters.parse_args(list(argv), environ=ENV if environ is None else environ)


def test_toolkit_style_argv_sorted_keys_and_sdk_values():
    # what the toolkit runs for hyperparameters={"batch-size": 32, "epochs": 2, "lr": 0.001, "model": "smallcnn",
    # "amp": False} written by the SDK as JSON strings
    args = parse("--amp", "False", "--batch-size", "32", "--epochs", "2", "--lr", "0.001", "--model", "smallcnn")
    assert (args.amp, args.batch_size, args.epochs, args.lr, args.model) == (False, 32, 2, 0.001, "smallcnn")


def test_paths_default_from_sm_variables():
    args = parse()
    assert args.model_dir == "/opt/ml/model"
    assert args.train == "/opt/ml/input/data/train"
    assert args.val == "/opt/ml/input/data/val"
    assert args.test is None
    assert args.output_data_dir == "/opt/ml/output/data"
    assert args.output_dir == "/opt/ml/output"


def test_paths_fall_back_locally_without_sagemaker():
    args = parse(environ={})
    assert args.model_dir == "model" and args.train.endswith("train") and args.val is None


def test_checkpoint_dir_from_environment():
    assert parse(environ=dict(ENV, SM_CHECKPOINT_DIR="/tmp/ck")).checkpoint_dir == "/tmp/ck"
    assert parse("--checkpoint-dir", "/x").checkpoint_dir == "/x"


@pytest.mark.parametrize("text, expected", [
    ("True", True), ("False", False), ("true", True), ("false", False), ("1", True), ("0", False),
    ("yes", True), ("no", False), ("YES", True),
])
def test_booleans_accept_every_spelling(text, expected):
    assert parse("--pretrained", text, "--model", "resnet18").pretrained is expected
    assert parse("--amp", text).amp is expected


@pytest.mark.parametrize("flag, text, expected", [
    ("--model", "ResNet18", "resnet18"), ("--model", "SMALLCNN", "smallcnn"), ("--model", " EfficientNet_B0 ",
                                                                              "efficientnet_b0"),
    ("--optimizer", "AdamW", "adamw"), ("--optimizer", "SGD", "sgd"),
    ("--device", "CUDA", "cuda"), ("--device", "Auto", "auto"), ("--task", "MultiLabel", "multilabel"),
    ("--class-weighting", "Balanced", "balanced"), ("--class-weighting", "NONE", "none"),
])
def test_choices_are_matched_ignoring_case_and_saved_as_the_table_spells_them(flag, text, expected):
    args = parse(flag, text)
    assert getattr(args, flag[2:].replace("-", "_")) == expected
    assert hyperparameters.recorded(args)[flag[2:].replace("-", "_")] == expected


@pytest.mark.parametrize("flag, text, expected", [
    ("--epochs", "3.0", 3), ("--epochs", "3.00", 3), ("--epochs", "1e2", 100),
    ("--epochs", "AUTO", "auto"), ("--batch-size", "64.0", 64), ("--seed", "7.0", 7), ("--patience", "0.0", 0),
    ("--in-channels", "3.0", 3), ("--in-channels", "1", 1), ("--image-size", "28.0", 28),
    ("--train-steps", " 200 ", 200), ("--num-workers", "-1.0", -1), ("--bootstrap", "0", 0),
])
def test_whole_numbers_written_as_floats_are_integers(flag, text, expected):
    """What a ContinuousParameter, a YAML file or SDK v2's JSON encoding of 3.0 sends for an integer."""
    value = getattr(parse(flag, text), flag[2:].replace("-", "_"))
    assert value == expected and type(value) is type(expected)
    assert hyperparameters.whole_number(3.0) == 3 and hyperparameters.whole_number(12345678901234567891) == \
        12345678901234567891


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "vgg99"], "choose from"),
    (["--model", "ResNet"], "--model: invalid choice: 'ResNet' (choose from"),
    (["--optimizer", "adam"], "--optimizer: invalid choice: 'adam' (choose from 'adamw', 'sgd')"),
    (["--device", "gpu"], "--device: invalid choice: 'gpu' (choose from 'auto', 'cpu', 'cuda')"),
    (["--epochs", "3.5"], "--epochs: expected a whole number, got '3.5'"),
    (["--epochs", "inf"], "--epochs: expected a whole number, got 'inf'"),
    (["--epochs", "nan"], "--epochs: expected a whole number, got 'nan'"),
    (["--seed", "True"], "--seed: expected a whole number, got 'True'"),
    (["--in-channels", "2.0"], "--in-channels: invalid choice: 2 (choose from 0, 1, 3)"),
    (["--in-channels", "1.5"], "--in-channels: expected a whole number, got '1.5'"),
    (["--batch-size", "0.0"], "--batch-size: must be >= 1, got '0.0'"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--lr", "-0.1"], "--lr: must be > 0"),
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--epochs", "2.5"], "--epochs: expected a whole number"),
    (["--epochs", "ten"], "--epochs: expected a whole number"),
    (["--amp", "maybe"], "--amp: expected a boolean"),
    (["--lr", "nan"], "--lr: expected a finite number"),
    (["--class-weighting", "inverse"], "choose from 'none', 'balanced'"),
    (["--val-fraction", "0.9"], "--val-fraction: must be <= 0.5"),
])
def test_invalid_values_give_one_clear_line(argv, fragment):
    with pytest.raises(ConfigError) as err:
        parse(*argv)
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_unknown_model_lists_valid_choices():
    with pytest.raises(ConfigError) as err:
        parse("--model", "vgg99")
    for name in ("smallcnn", "resnet18", "resnet50", "densenet121", "efficientnet_b0", "resnet18_small"):
        assert name in str(err.value)


def test_unknown_hyperparameter_is_named_with_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        parse("--epochz", "3")
    assert "--epochz" in str(err.value) and "epochs" in str(err.value)


def test_pretrained_smallcnn_is_refused():
    with pytest.raises(ConfigError, match="smallcnn has no pretrained weights"):
        parse("--pretrained", "true")
