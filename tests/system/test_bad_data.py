"""Bad data and bad parameters, a catalogue: each case ends in one clear line in output/failure and a non-zero
exit, or is handled and reported in the log as a user would expect.

The headline cases run through scripts/local_train.py (the real toolkit) in a WORK that already holds the model
and checkpoints of a successful job, and check that the failing job leaves them byte-identical. The rest call
train.main in-process, which is the same code without the toolkit's few seconds of start-up.
"""
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import channels as code_channels
import data
import errors
import loaders
import schedule
import train
import utils
from conftest import CLASSES, make_dataset, make_image, read_failure, run_local_train

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast

SAVED_HPS = ["epochs=2", "batch-size=16", "patience=0"]
DEFAULT = "code/label_dict.json (the default: the train channel has no label_dict.json) ['normal', 'pneumonia']"


# ---------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def restore_process_state():
    """train.main installs its SIGTERM handler and sets Pillow's pixel limit in this process: put them back."""
    saved = signal.getsignal(signal.SIGTERM), Image.MAX_IMAGE_PIXELS
    yield
    signal.signal(signal.SIGTERM, saved[0])
    Image.MAX_IMAGE_PIXELS = saved[1]


def fresh_data(root, **kw):
    kw.setdefault("counts", {"train": 40, "val": 12})
    return make_dataset(root, **kw)


def run_main(tmp_path, data, *extra, train_dir=None, val_dir="default"):
    """train.main with paths under tmp_path/job; returns (exit code, first failure line or None)."""
    job = tmp_path / "job"
    val_dir = os.path.join(data, "val") if val_dir == "default" else val_dir
    argv = ["--train", train_dir or os.path.join(data, "train"), "--model-dir", str(job / "model"),
            "--output-data-dir", str(job / "output" / "data"), "--output-dir", str(job / "output"),
            "--checkpoint-dir", str(job / "checkpoints"), "--epochs", "1", "--batch-size", "16", "--ema", "0",
            "--num-workers", "0"]
    if val_dir:
        argv += ["--val", val_dir]
    code = train.main(argv + list(extra))
    failure = job / "output" / "failure"
    return code, failure.read_text().splitlines()[0] if failure.exists() else None


def break_images(data):
    """A truncated PNG, a zero-byte file and a text file named .png: 3 of the 80 training images."""
    normal, pneumonia = os.path.join(data, "train", "normal"), os.path.join(data, "train", "pneumonia")
    blob = open(os.path.join(normal, "0.png"), "rb").read()
    open(os.path.join(normal, "0.png"), "wb").write(blob[: len(blob) // 2])
    open(os.path.join(normal, "1.png"), "wb").close()
    open(os.path.join(pneumonia, "0.png"), "w").write("not an image")
    return data


def snapshot(work):
    """Every byte of the model dir and the checkpoints."""
    files = {}
    for sub in ("model", "checkpoints"):
        for dirpath, _, names in os.walk(work / sub):
            for name in names:
                path = os.path.join(dirpath, name)
                files[os.path.relpath(path, work)] = open(path, "rb").read()
    return files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A successful job's WORK: the model and checkpoints that later failing jobs must not touch."""
    root = tmp_path_factory.mktemp("saved")
    data = make_dataset(root / "data", counts={"train": 40, "val": 12})
    result = run_local_train(data, root / "work", SAVED_HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    files = snapshot(root / "work")
    assert "model/model.pth" in files and "checkpoints/checkpoint-0002-000000.pt" in files
    return root / "work", files, data


def reuse(saved, tmp_path):
    """A copy of the saved WORK for one failing job."""
    src, files, data = saved
    work = tmp_path / "work"
    for sub in ("model", "checkpoints"):
        shutil.copytree(src / sub, work / sub)
    return work, files, data


def failure_line(work):
    return read_failure(work).splitlines()[0]


# ---------------------------------------------------------------- unreadable images
def test_a_few_corrupt_truncated_or_empty_files_are_skipped_and_counted(tmp_path, capsys):
    data = break_images(fresh_data(tmp_path / "data"))
    code, failure = run_main(tmp_path, data, "--max-bad-fraction", "0.05")
    out = capsys.readouterr().out
    assert code == 0 and failure is None, out[-3000:]
    assert "3 of 80 images in train could not be read and were skipped" in out
    assert f"skipping {os.path.join(data, 'train', 'normal', '1.png')}: cannot decode" in out
    assert os.path.exists(tmp_path / "job" / "model" / "model.pth")


def test_too_many_bad_files_fail_the_job_and_name_the_threshold(saved, tmp_path):
    work, before, _ = reuse(saved, tmp_path)
    data = break_images(fresh_data(tmp_path / "data"))
    result = run_local_train(data, work, SAVED_HPS)
    assert result.returncode != 0
    assert failure_line(work) == ("3 of 80 images in train could not be read (corrupt, truncated, empty or too "
                                  "large), above max-bad-fraction=0.01; fix or remove them, or raise "
                                  "max-bad-fraction")
    assert snapshot(work) == before  # nothing already saved was touched


def test_streamed_data_counts_bad_files_too(tmp_path, capsys):
    """Data sets larger than cache-max-gb are decoded every epoch by loader workers: the same rule holds."""
    data = break_images(fresh_data(tmp_path / "data"))
    code, failure = run_main(tmp_path, data, "--cache-max-gb", "0", "--max-bad-fraction", "0.05")
    out = capsys.readouterr().out
    assert code == 0 and "streamed from disk" in out, out[-3000:]
    assert "3 of 80 images in train could not be read and were skipped" in out
    code, failure = run_main(tmp_path / "again", data, "--cache-max-gb", "0")
    assert code == 2 and failure.startswith("3 of 80 images in train could not be read"), failure


def test_streamed_val_bad_files_are_held_to_the_same_rule(tmp_path, capsys):
    """Streamed val images are only read at evaluation: too many unreadable ones fail the job, by name."""
    data = fresh_data(tmp_path / "data")
    val_normal = os.path.join(data, "val", "normal")
    for name in sorted(os.listdir(val_normal))[:2]:
        open(os.path.join(val_normal, name), "wb").close()
    code, failure = run_main(tmp_path, data, "--cache-max-gb", "0")
    assert code == 2 and failure == ("2 of 24 images in val could not be read (corrupt, truncated, empty or too "
                                     "large), above max-bad-fraction=0.01; fix or remove them, or raise "
                                     "max-bad-fraction"), failure
    code, failure = run_main(tmp_path / "again", data, "--cache-max-gb", "0", "--max-bad-fraction", "0.1")
    out = capsys.readouterr().out
    assert code == 0 and failure is None, out[-3000:]
    assert "2 of 24 images in val could not be read and were skipped" in out
    metrics = json.load(open(tmp_path / "again" / "job" / "output" / "data" / "metrics.json"))
    assert sum(metrics["val"]["confusion_matrix"][0]) + sum(metrics["val"]["confusion_matrix"][1]) == 22


def test_streamed_training_batches_stay_full_when_images_are_unreadable(tmp_path):
    """Every rank must take the same number of steps: a bad image is replaced by a readable one of its batch,
    an all-bad batch by the previous batch; a first batch with nothing readable is a clear DataError."""
    root = fresh_data(tmp_path / "data", counts={"train": 4, "val": 1})
    paths, labels = code_channels.list_channel(os.path.join(root, "train"), CLASSES, "train")
    for i in (1, 4, 5, 6, 7):  # batch 0 (0-3) has one bad image, batch 1 (4-7) only bad ones
        open(paths[i], "wb").close()
    split = loaders.StreamSplit(loaders.ImageFileDataset(paths, labels, 1, 16, 10 ** 7), workers=0, pin_memory=False)
    batches = list(split.batches(range(8), 4, torch.device("cpu"), fill=True))
    assert [len(y) for _, y, _ in batches] == [4, 4]
    (x0, y0, i0), (x1, y1, i1) = batches
    assert 1 not in i0.tolist() and set(i0.tolist()) <= {0, 2, 3}
    assert torch.equal(x1, x0) and torch.equal(y1, y0)  # the all-bad batch: the previous one again
    assert (split.read, split.bad) == (8, 5)
    # evaluation drops the unreadable ones instead
    kept = [i for _, _, idx in split.batches(range(8), 4, torch.device("cpu")) for i in idx.tolist()]
    assert kept == [0, 2, 3]
    fresh = loaders.StreamSplit(loaders.ImageFileDataset(paths, labels, 1, 16, 10 ** 7), workers=0, pin_memory=False)
    with pytest.raises(errors.DataError, match="none of the 4 images of the first training batch could be read"):
        list(fresh.batches(range(4, 8), 4, torch.device("cpu"), fill=True))


# ---------------------------------------------------------------- formats and sizes
def write_any_mode(label, rng, mode, path):
    im = make_image(label, rng, size=16)
    arr = np.asarray(im)
    if mode == "I":
        im = Image.fromarray(arr.astype(np.int32) * 1000)  # 32-bit integer
    elif mode == "F":
        im = Image.fromarray(arr.astype(np.float32) / 255)  # 32-bit float
    elif mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16) * 64)  # 14-bit data in 16 bits
    elif mode == "RGB-24px":
        im = make_image(label, rng, size=24, mode="RGB")
    elif mode == "P-colour":  # the only mode here whose pixels hold colour: a tinted copy in a palette PNG
        im = Image.merge("RGB", (im, im.point(lambda v: v // 2), im.point(lambda v: v // 4))).convert("P")
    elif mode != "L":
        im = im.convert(mode)
    im.save(path)


MODES = {"L": ".png", "LA": ".png", "P": ".png", "1": ".png", "I;16": ".png", "I": ".tif", "F": ".tif",
         "RGB": ".jpg", "RGBA": ".png", "CMYK": ".jpg", "RGB-24px": ".bmp", "P-colour": ".png"}


def test_mixed_modes_bit_depths_formats_and_sizes_all_train(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for split, n in (("train", 3), ("val", 1)):
        for label, name in enumerate(CLASSES):
            os.makedirs(data / split / name)
            for i in range(n):
                for mode, ext in MODES.items():
                    write_any_mode(label, rng, mode, data / split / name / f"{i}-{mode.replace(';', '_')}{ext}")
    code, failure = run_main(tmp_path, str(data), "--max-bad-fraction", "0")
    out = capsys.readouterr().out
    assert code == 0, (failure, out[-3000:])
    assert "skipping" not in out and "could not be read" not in out
    config = json.loads((tmp_path / "job" / "model" / "model_config.json").read_text())
    # the tinted palette images hold colour (the RGB, RGBA and CMYK ones hold grey pixels); the most common size
    assert config["in_channels"] == 3 and config["image_size"] == 16


def test_huge_image_is_refused_by_the_pixel_limit_and_counted(tmp_path, capsys):
    data = fresh_data(tmp_path / "data")
    Image.new("L", (3000, 3000)).save(os.path.join(data, "train", "normal", "huge.png"))  # 9 Mpx, a small file
    code, failure = run_main(tmp_path, data, "--max-image-pixels", "1000000", "--max-bad-fraction", "0.05")
    out = capsys.readouterr().out
    assert code == 0, (failure, out[-3000:])
    assert "huge.png: 3000x3000 pixels is above the limit of 1000000 (the max-image-pixels hyperparameter" in out
    assert "1 of 81 images in train could not be read and were skipped" in out


def test_max_image_pixels_above_pillows_own_limit_is_honoured(tmp_path, monkeypatch, capsys):
    """Pillow refuses images above Image.MAX_IMAGE_PIXELS by itself; max-image-pixels must be the one limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # stands in for Pillow's 89 Mpx against 16x16 images
    code, failure = run_main(tmp_path, fresh_data(tmp_path / "data"), "--max-image-pixels", "1000")
    out = capsys.readouterr().out
    assert code == 0 and "skipping" not in out, (failure, out[-3000:])


# ---------------------------------------------------------------- class folders and label_dict.json
def test_an_empty_class_folder_in_val_is_a_warning(tmp_path, capsys):
    data = fresh_data(tmp_path / "data")
    shutil.rmtree(os.path.join(data, "val", "pneumonia"))
    os.makedirs(os.path.join(data, "val", "pneumonia"))
    code, failure = run_main(tmp_path, data)
    out = capsys.readouterr().out
    assert code == 0, (failure, out[-3000:])
    assert "class folder 'pneumonia' in val holds no images; it is ignored" in out


def test_a_class_without_training_images_is_an_error(tmp_path):
    data = fresh_data(tmp_path / "data")
    for name in os.listdir(os.path.join(data, "train", "pneumonia")):
        os.unlink(os.path.join(data, "train", "pneumonia", name))
    code, failure = run_main(tmp_path, data)
    assert code == 2
    assert failure.startswith(f"train has no images of class 'pneumonia' of {DEFAULT}; add images of every "
                              "class"), failure


def test_a_test_class_missing_from_label_dict_is_an_error(tmp_path):
    data = fresh_data(tmp_path / "data", counts={"train": 40, "val": 12, "test": 4})
    shutil.copytree(os.path.join(data, "test", "normal"), os.path.join(data, "test", "covid"))
    code, failure = run_main(tmp_path, data, "--test", os.path.join(data, "test"))
    assert code == 2
    assert failure == (f"class folder 'covid' in test is not in {DEFAULT}; class folders are the class names or "
                       "their folder names ['normal', 'pneumonia']; for your own classes put a label_dict.json at "
                       'the root of the train channel (index -> class name, e.g. {"0": "covid", "1": "normal", '
                       '"2": "pneumonia"}) or pass the label-dict hyperparameter, or remove the folder')


def test_a_test_class_never_seen_in_training_is_an_error(tmp_path):
    data = fresh_data(tmp_path / "data", counts={"train": 40, "val": 12, "test": 4})
    shutil.copytree(os.path.join(data, "test", "normal"), os.path.join(data, "test", "covid"))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": "normal", "1": "pneumonia", "2": "covid"}))
    code, failure = run_main(tmp_path, data, "--test", os.path.join(data, "test"), "--label-dict", str(labels))
    assert code == 2
    assert failure.startswith("train has no images of class 'covid'"), failure


@pytest.mark.parametrize("content, start", [
    (None, "the label-dict hyperparameter's file not found at "),
    ("{'0': 'normal'", "the label-dict hyperparameter's file at "),
    ('{"0": "normal"}', ""),
])
def test_label_dict_missing_or_malformed(tmp_path, content, start):
    path = tmp_path / "labels.json"
    if content is not None:
        path.write_text(content)
    code, failure = run_main(tmp_path, fresh_data(tmp_path / "data"), "--label-dict", str(path))
    assert code == 2 and failure.startswith(start) and str(path) in failure, failure
    assert ("not valid JSON" in failure) == (content == "{'0': 'normal'"), failure


def test_a_malformed_shipped_label_dict_fails_the_job(saved, tmp_path):
    work, before, data = reuse(saved, tmp_path)
    bad = tmp_path / "label_dict.json"
    bad.write_text('{"0": "normal", "1": "pneumonia",}')  # a trailing comma
    result = run_local_train(data, work, SAVED_HPS, extra=["--label-dict", str(bad)])
    assert result.returncode != 0
    assert failure_line(work).startswith(f"the label-dict hyperparameter's file at {bad} is not valid JSON")
    assert snapshot(work) == before


# ---------------------------------------------------------------- channels
def test_a_channel_given_as_a_single_file_fails_the_job(saved, tmp_path):
    work, before, _ = reuse(saved, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").write_bytes(b"PK\x03\x04 a zip uploaded as the channel")
    result = run_local_train(data, work, SAVED_HPS)
    assert result.returncode != 0
    assert failure_line(work).startswith(f"the train channel {work}/input/data/train is a single file, not a folder")
    assert snapshot(work) == before


@pytest.mark.parametrize("channel", ["train", "val"])
@pytest.mark.parametrize("kind, fragment", [("file", "is a single file, not a folder"),
                                            ("empty", "holds no class folders")])
def test_a_channel_that_is_a_file_or_an_empty_folder(tmp_path, channel, kind, fragment):
    data = fresh_data(tmp_path / "data")
    path = tmp_path / f"{channel}-{kind}"
    path.mkdir() if kind == "empty" else path.write_text("x")
    paths = {"train_dir": str(path)} if channel == "train" else {"val_dir": str(path)}
    code, failure = run_main(tmp_path, data, **paths)
    assert code == 2 and failure.startswith(f"the {channel} channel {path} {fragment}"), failure


def test_a_data_set_smaller_than_one_batch_trains(tmp_path, capsys):
    data = fresh_data(tmp_path / "data", counts={"train": 3, "val": 2})
    code, failure = run_main(tmp_path, data, "--batch-size", "128", "--epochs", "2")
    out = capsys.readouterr().out
    assert code == 0, (failure, out[-3000:])
    assert "data: train=6 val=4" in out and "epoch=2 train_loss=" in out
    assert os.path.exists(tmp_path / "job" / "model" / "model.pth")


# ---------------------------------------------------------------- a loss that is not finite
def test_a_nan_loss_from_the_start_saves_nothing_and_names_lr(tmp_path):
    code, failure = run_main(tmp_path, fresh_data(tmp_path / "data"), "--lr", "1e30")
    assert code == 2
    assert failure == ("the training loss became nan in epoch 1; lower lr (now 1e+30) or turn amp off; "
                       "no model was saved")
    assert not os.listdir(tmp_path / "job" / "model") and not os.listdir(tmp_path / "job" / "checkpoints")


def test_a_nan_loss_keeps_the_last_good_checkpoint_and_model_and_a_lower_lr_resumes(saved, tmp_path):
    work, before, data = reuse(saved, tmp_path)
    result = run_local_train(data, work, ["epochs=3", "batch-size=16", "patience=0", "lr=1e30"])
    assert result.returncode != 0
    saved_lr = schedule.BASE_LR * (16 / schedule.BASE_BATCH) ** 0.5  # lr auto at batch 16, as the first job ran
    assert f"lr 1e+30 replaces the checkpoint's {saved_lr:g} from here on" in result.stdout
    line = failure_line(work)
    assert line.startswith("the training loss became nan in epoch 3; lower lr (now 1e+30) or turn amp off; "
                           "the best model so far (epoch "), line
    assert line.endswith("the checkpoint of epoch 2 was kept: run again with the same checkpoint dir and a lower "
                         "lr to resume from it"), line
    assert snapshot(work) == before  # no NaN checkpoint, and the saved model untouched

    result = run_local_train(data, work, ["epochs=3", "batch-size=16", "patience=0"])  # what the line says
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 epoch(s) done" in result.stdout and "epoch=3 train_loss=" in result.stdout
    weights = torch.load(work / "model" / "model.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_broken_model_with_a_finite_loss_fails_and_saves_nothing(tmp_path):
    """lr=1e12 with one step per epoch: that step's loss is still finite, the weights it leaves are not usable."""
    code, failure = run_main(tmp_path, fresh_data(tmp_path / "data", counts={"train": 20, "val": 6}), "--lr", "1e12",
                             "--batch-size", "64")
    assert code == 2
    assert failure.startswith("the model's ") and "became NaN or infinite" in failure, failure
    assert failure.endswith("; lower lr (now 1e+12) or turn amp off; no model was saved"), failure
    assert not os.listdir(tmp_path / "job" / "model")


def test_a_broken_model_never_replaces_the_saved_one(saved, tmp_path):
    work, before, data = reuse(saved, tmp_path)
    # the saved job's batch size, one step an epoch: that step's loss is finite, the weights it leaves are not
    result = run_local_train(data, work, SAVED_HPS[1:] + ["epochs=3", "lr=1e12", "max-steps-per-epoch=1"])
    assert result.returncode != 0
    line = failure_line(work)
    assert "became NaN or infinite" in line and ("in epoch 3" in line or "after epoch 3" in line), line
    assert "the checkpoint of epoch 2 was kept" in line, line
    assert snapshot(work) == before  # the model and checkpoints of the good run, byte for byte


def test_weights_that_become_non_finite_end_the_run_with_the_best_model_kept(tmp_path):
    import engine

    class BreakAWeight(engine.Callback):  # what an overflowing last update of epoch 2 does to a weight
        def on_step_end(self, trainer, epoch, step):
            if (epoch, step) == (2, trainer.plan.steps_per_epoch):
                with torch.no_grad():
                    next(trainer.model.parameters()).view(-1)[0] = float("inf")

    data = fresh_data(tmp_path / "data")
    job = tmp_path / "job"
    argv = ["--train", os.path.join(data, "train"), "--val", os.path.join(data, "val"), "--model-dir",
            str(job / "model"), "--output-data-dir", str(job / "out"), "--output-dir", str(job / "out"),
            "--checkpoint-dir", "", "--epochs", "3", "--batch-size", "16"]
    assert train.main(argv, callbacks=[BreakAWeight()]) == 2
    line = (job / "out" / "failure").read_text().strip()
    assert line.startswith("the model's weights became NaN or infinite in epoch 2 (its training loss was "), line
    assert line.endswith(f"the best model so far (epoch 1) is in {job / 'model'}"), line
    weights = torch.load(job / "model" / "model.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


# ---------------------------------------------------------------- where things are written
def test_an_unwritable_model_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")  # as root, chmod would not stop a write; this does
    model_dir = blocker / "model"
    code, failure = run_main(tmp_path, fresh_data(tmp_path / "data"), "--model-dir", str(model_dir))
    assert code == 2
    assert failure == (f"the model dir {model_dir} is not writable (Not a directory); give a writable "
                       "--model-dir or fix its permissions")


def test_an_interrupted_write_never_replaces_a_good_file(tmp_path, monkeypatch):
    """Artefacts go through a temp file and os.replace: a failure mid-write leaves the old file whole."""
    target = tmp_path / "model.pth"
    utils.atomic_torch_save({"w": torch.ones(3)}, str(target))
    good = target.read_bytes()

    def disk_full(fd):  # the temp file has been written, then the disk turns out to be full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        utils.atomic_torch_save({"w": torch.zeros(3)}, str(target))
    assert target.read_bytes() == good and os.listdir(tmp_path) == ["model.pth"]


# ------------------------------------------------- settings the task would not use; data that cannot judge
def test_ordinal_with_finding_columns_is_refused_when_the_task_is_auto(tmp_path):
    """task=auto becomes multilabel from the manifest's finding columns: ordinal=true would be silently unused."""
    from conftest import make_multilabel_dataset
    data = make_multilabel_dataset(tmp_path / "d", counts={"train": 12, "val": 6})
    code, failure = run_main(tmp_path, data, "--ordinal", "true")
    assert code == 2 and failure.startswith("invalid hyperparameter: ordinal=true needs one grade per image, but this "
                                            "run is multilabel (task=auto follows the train channel's labels.csv)")


def three_classes(root, names):
    """Class folders ``names`` in train (8 images each) and val (3 each), no label dict."""
    for split, n in (("train", 8), ("val", 3)):
        for label, name in enumerate(names):
            os.makedirs(root / split / name)
            for i in range(n):
                rng = np.random.default_rng([i, label, split == "val"])  # no image in two splits (train.py refuses it)
                make_image(label % 2, rng, 16).save(root / split / name / f"{i}.png")
    return str(root)


def test_target_sensitivity_with_more_than_two_classes_is_refused(tmp_path):
    data = three_classes(tmp_path / "d", ["a", "b", "c"])
    code, failure = run_main(tmp_path, data, "--target-sensitivity", "0.95")
    assert code == 2 and failure.startswith("invalid hyperparameter: target-sensitivity chooses the threshold of a "
                                            "binary or multi-label decision, but this run has 3 classes")


def test_ordinal_grades_in_sorted_name_order_are_a_warning(tmp_path, capsys):
    data = three_classes(tmp_path / "d", ["none", "mild", "severe"])
    code, _ = run_main(tmp_path, data, "--ordinal", "true", "--bootstrap", "0")
    assert code == 0
    assert "ordinal=true: the grades are in the order ['mild', 'none', 'severe'], their names sorted" in \
        capsys.readouterr().out


def test_a_val_split_of_one_class_is_said_at_start_up(tmp_path, capsys):
    data = fresh_data(tmp_path / "d")
    shutil.rmtree(os.path.join(data, "val", "pneumonia"))
    code, _ = run_main(tmp_path, data, "--bootstrap", "0")
    out = capsys.readouterr().out
    assert code == 0
    warning = "the val split (12 images) lacks images of the class(es) ['pneumonia']: the val AUC is undefined"
    assert warning in out and out.index(warning) < out.index("epoch=1 ")


def test_patients_in_two_given_splits_are_a_warning(tmp_path, capsys):
    from conftest import make_multilabel_dataset
    data = make_multilabel_dataset(tmp_path / "d", counts={"train": 12, "val": 6})
    val_csv = os.path.join(data, "val", "labels.csv")
    with open(val_csv, encoding="utf-8") as fh:
        text = fh.read().replace("val-p0", "train-p0").replace("val-p1", "train-p1")
    with open(val_csv, "w", encoding="utf-8") as fh:
        fh.write(text)
    code, _ = run_main(tmp_path, data, "--bootstrap", "0")
    assert code == 0
    assert "2 patient(s) have images in more than one split (train and val): the held-out figures are optimistic" \
        in capsys.readouterr().out


def test_a_time_limit_logs_the_new_plan_with_what_follows_its_length(tmp_path, capsys):
    data = fresh_data(tmp_path / "d")
    code, _ = run_main(tmp_path, data, "--epochs", "auto", "--ema", "auto", "--max-train-minutes", "0.0001",
                       "--bootstrap", "0")
    out = capsys.readouterr().out
    assert code == 0
    plans = [line[line.index("plan: "):] for line in out.splitlines() if "plan: " in line]
    assert len(plans) == 2 and plans[0].startswith("plan: 300 epochs x 5 steps") and "so 1 epochs instead of 300" in out
    assert plans[1].startswith("plan: 1 epochs x 5 steps = 5 steps of batch 16") and "warm-up 4 steps" in plans[1]
    assert "ema 0.9," in plans[1] and "patience 3" in plans[1]


def test_resuming_on_other_training_data_is_a_warning(tmp_path, capsys):
    """The same checkpoint dir reused for another data set: the run goes on from the checkpoint, and says so."""
    first = fresh_data(tmp_path / "first")
    assert run_main(tmp_path, first, "--bootstrap", "0")[0] == 0
    smaller = fresh_data(tmp_path / "smaller", counts={"train": 24, "val": 12})
    capsys.readouterr()
    code, _ = run_main(tmp_path, smaller, "--epochs", "2", "--bootstrap", "0")
    out = capsys.readouterr().out
    assert code == 0 and "resumed from" in out
    assert (f"the checkpoint in {tmp_path / 'job' / 'checkpoints'} was trained on 80 training images, this run has "
            "48: it goes on with the checkpoint's plan and weights") in out


def test_a_model_that_cannot_take_the_image_size_fails_before_training(tmp_path):
    data = fresh_data(tmp_path / "d", counts={"train": 8, "val": 4})
    code, failure = run_main(tmp_path, data, "--model", "densenet121", "--image-size", "28")
    assert code == 2 and failure.startswith("invalid hyperparameter: model=densenet121 cannot take 28 px images (")
    assert not os.path.exists(tmp_path / "job" / "checkpoints") or not os.listdir(tmp_path / "job" / "checkpoints")
