"""benchmarks/ (make bench, gpu_check.sh): the machinery runs on tiny settings and reports what it should.

Speed targets are never asserted here: they live in the benchmark's own report (README, "Performance").
"""
import json
import re
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import epoch_log
import model_def
from benchmarks import ceiling, datasets, gpu_report, harness, probe, report
from benchmarks import run as bench
from benchmarks.sections import ceiling as ceiling_section
from benchmarks.sections import dev, quality
from conftest import ROOT

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One real run of make bench's throughput and sizes sections on tiny settings: train.py (through the probe,
    and as itself at 28 and 64 px) and the plain ImageFolder loop, each in its own process."""
    build = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke", "--only", "throughput,sizes", "--cases",
           "smallcnn@28", "--build", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(build / "results.json") as fh:
        return json.load(fh), proc.stdout


def test_smoke_run_writes_results_json(smoke):
    results, _ = smoke
    assert results["mode"] == "smoke" and results["sections"] == ["throughput", "sizes"]
    assert results["machine"]["cpus"] >= 1 and results["machine"]["cpu"]
    assert len(results["load_start"]) == 3 and len(results["load_end"]) == 3
    (row,) = results["throughput"]
    assert row["case"] == "smallcnn@28" and row["image_size"] == 28 and row["n_train"] == 96
    assert row["amp_dtype"] in ("bfloat16", "float32")
    assert row["train_py"]["images_per_sec"] > 0 and row["plain"]["0"]["images_per_sec"] > 0
    assert row["ratio"] == pytest.approx(row["train_py"]["images_per_sec"] / row["plain"]["0"]["images_per_sec"])
    assert [t["name"] for t in results["targets"]] == ["train.py vs plain loop, smallcnn@28",
                                                      "train.py vs plain loop, CPU time per image, smallcnn@28"]
    assert row["ratio_cpu_time"] > 0 and row["train_py"]["images_per_cpu_s"] > 0


def test_smoke_run_prints_the_table(smoke):
    _, stdout = smoke
    assert "Training throughput, steady state" in stdout
    assert "smallcnn@28" in stdout and "Targets:" in stdout and "results.json" in stdout
    assert "Image sizes: training MFLOPs per image" in stdout and "smallcnn, stride-1 stem" in stdout


def test_sizes_section_counts_flops_and_times_train_py(smoke):
    sizes = smoke[0]["sizes"]
    flops = sizes["flops_per_image"]
    assert set(flops) == {f"{m}@{s}" for m in ("smallcnn", "smallcnn/s1", "resnet18") for s in (28, 64)}
    # at 28 and 64 px train.py's stem is the stride-1 one; a conv net's cost grows with the pixels
    assert flops["smallcnn@64"] == flops["smallcnn/s1@64"]
    assert flops["smallcnn@64"] / flops["smallcnn@28"] == pytest.approx((64 / 28) ** 2, rel=0.05)
    assert [(r["model"], r["size"]) for r in sizes["runs"]] == [("smallcnn", 28), ("smallcnn", 64)]
    for run in sizes["runs"]:
        assert run["images_per_sec"] > 0 and [e["epoch"] for e in run["epochs"]] == [1]
        assert run["reached"] == (run["epochs"][0]["val_auc"] >= report.TARGET_AUC)


def test_the_stride_of_a_flop_case_is_forced_by_its_name():
    small = ceiling.train_flops_per_image("smallcnn", 128, 1)
    stride1 = ceiling.train_flops_per_image("smallcnn/s1", 128, 1)
    assert model_def.stem_stride(128) == 2 and 3.5 < stride1 / small < 4.5


@pytest.fixture(scope="module")
def dev_smoke(tmp_path_factory):
    """One real run of the dev section on tiny settings: train.py with --epochs 1 on 48 training and 40 val
    images of each setting (RetinaMNIST too when ../shared/data has it), one seed, each run in its own process."""
    build = tmp_path_factory.mktemp("bench-dev")
    retina = datasets.dev_npz("retinamnist_trainval.npz", datasets.DEV_DATA)
    settings = ["pneumonia-300"] + (["retina"] if retina else [])
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke", "--only", "dev", "--settings",
           ",".join(settings), "--build", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(build / "results.json") as fh:
        return json.load(fh), proc.stdout, settings


def test_dev_smoke_run_writes_every_field(dev_smoke):
    results, _, settings = dev_smoke
    assert results["mode"] == "smoke" and results["sections"] == ["dev"]
    assert len(results["load_start"]) == 3 and len(results["load_end"]) == 3 and results["machine"]["cpu"]
    dev = results["dev"]
    assert dev["seeds"] == [1] and dev["extra_args"] == ["--epochs", "1"] and dev["ece_bins"] == 15
    assert dev["code"]["dir"] == os.path.join(ROOT, "code") and list(dev["settings"]) == settings
    for name, st in dev["settings"].items():
        assert st["n_train"] == 48 and st["n_val"] == 40 and sum(st["train_per_class"]) == 48
        assert min(st["train_per_class"]) >= 1 and st["subsample_seed"] == datasets.DEV_SUBSAMPLE_SEED
        for key in ("val_accuracy", "val_auc", "val_ece", "steps", "epochs_run", "wall_s"):
            assert st[key]["mean"] is not None and len(st[key]["values"]) == 1 and st[key]["sd"] is None, key
        (run,) = st["runs"]
        assert run["seed"] == 1 and 0 <= run["val_accuracy"] <= 1 and 0 <= run["val_auc"] <= 1
        assert 0 <= run["val_ece"] <= 1 and run["ece_from"] and 0 <= run["val_ece_uncalibrated"] <= 1
        # the val folder went in as --test too only if this train.py writes no val ECE of its own
        assert run["val_as_test"] == dev["val_as_test"] == (run["ece_from"] != "metrics.json val.ece")
        assert run["test_equals_val"] is not False
        assert run["epochs_run"] == 1 and run["best_epoch"] == 1 and run["epochs_max"] == 1 and run["steps"] >= 1
        if run["steps_from"] != "metrics.json":  # counted as epoch_loop.py does: 48 images, one full batch
            assert run["steps"] == 1
        assert run["in_channels"] == (3 if name == "retina" else 1)
        assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["train_images_per_sec_median"] > 0
        assert len(run["load_before"]) == 3 and len(run["load_after"]) == 3
        assert os.path.isfile(run["metrics"]) and os.path.isfile(run["log"])


def test_dev_smoke_run_prints_the_table(dev_smoke):
    results, stdout, settings = dev_smoke
    assert "Dev settings: train.py at" in stdout and results["machine"]["cpu"] in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("setting ") and "val ECE" in line)
    for column in ("train", "val", "classes", "channels", "val acc", "val AUC", "val ECE", "steps",
                   "epochs run (best)", "wall s"):
        assert column in header
    assert "Each run:" in stdout and "CPU s" in stdout and "load before" in stdout and "results.json" in stdout
    for name in settings:
        row = next(line for line in stdout.splitlines() if line.startswith(name + " "))
        assert len(row.split()) >= 11 and "1(1)" in row


def test_expected_calibration_error_is_guo_et_al():
    # confidences 0.9, 0.9 (one right), 0.58 (right), 0.55 (wrong): bins (0.8667, 0.9333] and (0.5333, 0.6]
    labels = [0, 1, 0, 1]
    prob = [[0.9, 0.1], [0.9, 0.1], [0.58, 0.42], [0.55, 0.45]]
    expected = 2 / 4 * abs(0.5 - 0.9) + 2 / 4 * abs(0.5 - 0.565)
    assert dev.expected_calibration_error(labels, prob) == pytest.approx(expected)
    assert dev.expected_calibration_error([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0
    # train.py's own figure wins; else the predictions of the val folder passed as --test
    assert dev.val_ece({"val": {"ece": 0.25}, "test_predictions": {"labels": labels, "probabilities": prob}}) == \
        (0.25, "metrics.json val.ece")
    assert dev.val_ece({"val": {}, "test_predictions": {"labels": labels, "probabilities": prob}})[0] == \
        pytest.approx(expected)
    assert dev.val_as_test_args("v") == ["--val", "v", "--test", "v"]


def test_dev_subsample_is_stratified_and_seeded():
    labels = [0] * 1214 + [1] * 3494
    idx = datasets.stratified_subsample(labels, 300, 7)
    assert len(idx) == 300 and sorted(set(idx)) == list(idx)
    assert sum(labels[i] == 0 for i in idx) == 77  # 300 x 1214 / 4708 = 77.4
    assert list(idx) == list(datasets.stratified_subsample(labels, 300, 7))
    assert list(idx) != list(datasets.stratified_subsample(labels, 300, 8))
    assert len(datasets.stratified_subsample(labels, None, 7)) == 4708
    few = datasets.stratified_subsample([0] * 98 + [1, 2], 10, 0)  # every class keeps an image
    assert len(few) == 10 and {98, 99} <= set(few)


def test_a_dev_setting_with_a_size_is_written_at_that_size(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", train_images=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
             train_labels=np.array([0, 1] * 10), val_images=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
             val_labels=np.array([0, 1] * 3))
    settings = {"tiny-64": dict(npz="tiny.npz", n_train=10, classes=("a", "b"), size=64),
                "tiny": dict(npz="tiny.npz", n_train=10, classes=("a", "b"))}
    for name, side in (("tiny-64", 64), ("tiny", 28)):
        folder, info = datasets.dev_data(str(tmp_path / "build"), str(tmp_path), name, settings=settings)
        assert info["image_shape"] == [side, side] and info["n_train"] == 10 and info["n_val"] == 6
        first = os.path.join(folder, "train", "a", sorted(os.listdir(os.path.join(folder, "train", "a")))[0])
        assert Image.open(first).size == (side, side)


def test_dev_steps_and_spread():
    hp = {"batch_size": 128, "max_steps_per_epoch": 0}
    metrics = {"history": [{}] * 40, "config": {"hyperparameters": hp}}
    assert dev.run_steps(metrics, 300) == (80, "epochs x steps per epoch")  # 2 full batches of 128
    assert dev.run_steps(metrics, 100)[0] == 40  # one batch of all 100
    assert dev.run_steps(dict(metrics, steps=123), 300) == (123, "metrics.json")
    s = report.spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(1.0) and s["values"] == [1.0, 2.0, 3.0]
    assert report.spread([0.5])["sd"] is None


def test_train_py_epoch_lines_are_parsed():
    line = epoch_log.epoch_line({"epoch": 7, "train_loss": 0.25, "val_loss": 0.2, "val_auc": 0.9712,
                                 "val_acc": 0.94, "lr": 0.001, "images_per_sec": 812.4})
    values = quality.epoch_log.parse_epoch("2026-01-01 00:00:00,000 INFO " + line)
    assert (values["epoch"], values["val_auc"], values["val_acc"], values["images_per_sec"]) == (7, 0.9712, 0.94,
                                                                                                    812.4)


def test_steady_state_leaves_out_the_warm_up_epoch():
    result = {"epochs": [{"epoch": 1, "images": 100, "images_per_sec": 10.0, "wall_s": 10, "cpu_s": 20},
                         {"epoch": 2, "images": 100, "images_per_sec": 100.0, "wall_s": 1, "cpu_s": 2},
                         {"epoch": 3, "images": 300, "images_per_sec": 300.0, "wall_s": 1, "cpu_s": 1}]}
    s = harness.steady(result)
    assert s["images_per_sec"] == pytest.approx(200.0) and s["epoch_ips"] == [100.0, 300.0]
    assert s["cpu_util"] == pytest.approx(1.5)


def test_ceiling_fraction_uses_the_step_dtype():
    rows = [{"case": "smallcnn@28", "model": "smallcnn", "amp_dtype": "bfloat16", "baseline_workers": 0,
             "batch_size": 128, "ratio": 3.5, "train_py": {"images_per_sec": 1000.0, "cpu_util": 1.9},
             "plain": {"0": {"images_per_sec": 250.0}}}]
    ceil = {"matmul": {"float32": {"flops": 100e9}, "bfloat16": {"flops": 200e9}},
            "flops_per_image": {"smallcnn@28:1": 60e6}}
    ceiling_section.attach(rows, ceil)
    assert rows[0]["achieved_flops"] == pytest.approx(60e9)
    assert rows[0]["ceiling_fraction"] == pytest.approx(0.30) and rows[0]["ceiling_fraction_fp32"] == pytest.approx(0.6)
    assert rows[0]["plain_ceiling_fraction_fp32"] == pytest.approx(0.15)
    targets = report.targets({"throughput": rows})
    assert [t["met"] for t in targets] == [True, True]
    text = report.render({"machine": {"cpu": "x", "cpus": 2}, "torch": "t", "load_start": [0, 0, 0],
                          "load_end": [0, 0, 0], "mode": "full", "ceiling": dict(ceil, threads=2),
                          "throughput": rows, "targets": targets}, bench.SECTIONS)
    assert re.search(r"bfloat16 +200.0", text) and "30%" in text and "3.50x" in text


def test_matmul_ceiling_and_training_flops():
    result = ceiling.ceiling([64], 1, torch.device("cpu"))
    assert result["float32"]["flops"] > 0
    flops = ceiling.train_flops_per_image("smallcnn", 28, 1)
    # by hand: 2 x MACs of every convolution and the linear layer at their output sizes; backward is twice the
    # forward (input and weight gradients), less the input gradient of the first convolution (the image's)
    model = model_def.create_model("smallcnn", 2, 1)
    forward, first = 0, None

    def count(module, inputs, output):
        nonlocal forward, first
        if isinstance(module, torch.nn.Conv2d):
            f = 2 * output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        else:
            f = 2 * module.in_features * module.out_features
        first = f if first is None else first
        forward += f

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    model(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert flops == pytest.approx(3 * forward - first, rel=1e-6)
    assert 1.2e8 < flops < 1.3e8  # about 42 MFLOP forward at 28 px


def test_conv_speedup_times_the_models_own_convolutions():
    out = ceiling.conv_speedup("smallcnn", 28, 1, 4, torch.device("cpu"), repeats=1)
    assert out["plain"]["dtype"] == "float32" and out["batch"] == 4
    assert out["train_py"]["dtype"] == ("bfloat16" if ceiling.bf16_supported(torch.device("cpu")) else "float32")
    fc = 3 * 2 * model_def.create_model("smallcnn", 2, 1).fc.weight.numel()
    for side in ("plain", "train_py"):  # FLOPs counted = the training FLOPs of the convolutions (all but the fc)
        conv_flops = out[side]["flops"] * out[side]["seconds_per_batch"] / 4
        assert conv_flops == pytest.approx(ceiling.train_flops_per_image("smallcnn", 28, 1) - fc, rel=1e-6)
    assert out["speedup"] == pytest.approx(out["plain"]["seconds_per_batch"] / out["train_py"]["seconds_per_batch"])
    text = report.render({"machine": {"cpu": "x", "cpus": 2}, "torch": "t", "load_start": [0, 0, 0],
                          "load_end": [0, 0, 0], "mode": "full",
                          "ceiling": {"threads": 2, "matmul": {"float32": {"flops": 1e11}},
                                      "conv_speedup": {"smallcnn@28:1": out}}}, bench.SECTIONS)
    assert "Convolutions alone" in text and re.search(r"smallcnn@28 .* %.2fx" % out["speedup"], text)


def test_synthetic_scaling_data_is_class_folders(tmp_path):
    npz = os.path.join(ROOT, "data", "pneumoniamnist_trainval.npz")
    folder = datasets.synthetic(str(tmp_path), npz, 40, (20, 10))
    counts = {split: sum(f.endswith(".png") for _, _, files in os.walk(os.path.join(folder, split)) for f in files)
              for split in ("train", "val")}
    assert counts == {"train": 40, "val": 10}
    assert sorted(os.listdir(os.path.join(folder, "train"))) == ["label_dict.json", "normal", "pneumonia"]


def test_gpu_busy_is_the_union_of_kernel_intervals():
    def evt(start, end, device="DeviceType.CUDA"):
        return SimpleNamespace(device_type=device, time_range=SimpleNamespace(start=start, end=end))

    prof = SimpleNamespace(events=lambda: [evt(0, 400_000), evt(300_000, 500_000), evt(600_000, 700_000),
                                           evt(0, 1_000_000, "DeviceType.CPU")])
    busy, kernels = probe.kernel_busy_fraction(prof, 1.0)
    assert busy == pytest.approx(0.6) and kernels == 3


def test_gpu_report_reads_probe_logs_and_nvidia_smi(tmp_path):
    (tmp_path / "runs").mkdir()
    epochs = [{"epoch": 1, "images": 256, "steps": 2, "images_per_sec": 50.0, "wall_s": 9.0, "profiled": False,
               "start_unix": 1000.0, "end_unix": 1009.0},
              {"epoch": 2, "images": 256, "steps": 2, "images_per_sec": 2000.0, "wall_s": 0.128, "profiled": False,
               "start_unix": 1010.0, "end_unix": 1012.0},
              {"epoch": 3, "images": 256, "steps": 2, "images_per_sec": 1900.0, "wall_s": 0.135, "profiled": True,
               "gpu_busy": 0.95, "kernels": 900, "start_unix": 1013.0, "end_unix": 1014.0}]
    result = {"rc": 0, "epochs": epochs, "amp_dtype": "bfloat16", "cuda_max_allocated_mb": 1234.0,
              "cuda_max_reserved_mb": 2048.0, "gpu": "NVIDIA H100"}
    (tmp_path / "runs" / "resnet50-224-amp.log").write_text("log\nPROBE_RESULT " + json.dumps(result) + "\n")
    (tmp_path / "runs" / "smallcnn-28-fp32.log").write_text("Traceback\nRuntimeError: CUDA out of memory\n")
    import datetime

    def stamp(t):
        return datetime.datetime.fromtimestamp(t).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]

    (tmp_path / "nvidia-smi.csv").write_text("".join(f"{stamp(t)}, {u}, {m}\n" for t, u, m in [
        (1005.0, 10, 500), (1010.5, 90, 3000), (1011.5, 100, 3100), (1013.5, 50, 3100)]))
    rows = {r["name"]: r for r in gpu_report.summarise(str(tmp_path))}
    ok = rows["resnet50-224-amp"]
    assert ok["images_per_sec"] == 2000.0 and ok["gpu_busy"] == 0.95 and ok["smi_util"] == pytest.approx(0.95)
    assert ok["max_allocated_mb"] == 1234.0 and ok["warmup_epoch_s"] == 9.0
    assert not rows["smallcnn-28-fp32"]["ok"] and "out of memory" in rows["smallcnn-28-fp32"]["reason"]
    text = gpu_report.render(list(rows.values()))
    assert "GPU: NVIDIA H100" in text and "95.0%" in text and "at 224 px, resnet50-224-amp: 95.0% (met)" in text


def test_gpu_check_script_parses_and_plans_every_configuration():
    script = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
    subprocess.run(["bash", "-n", script], check=True)
    out = subprocess.run(["bash", script, "--dry-run"], capture_output=True, text=True, timeout=30, cwd=ROOT,
                         env=dict(os.environ, OUT="build/gpu-check-dry")).stdout
    runs = [line for line in out.splitlines() if "benchmarks/probe.py" in line]
    assert len(runs) == 9
    shards = [r for r in runs if "/shards224/train" in r]  # the same images as shards (prepare_data --shards)
    assert len(shards) == 1 and "--model resnet50 " in shards[0] and "--amp true" in shards[0]
    assert "medimg.prepare_data --folder build/gpu-check-dry/data224 --shards" in out
    assert "benchmarks/gpu_decode.py" in out and "--device cuda" in out.split("gpu_decode.py")[1].splitlines()[0]
    for model, size in (("smallcnn", "28"), ("resnet50", "224")):
        mine = [r for r in runs if f"--model {model} " in r and f"/data{size}/train" in r]
        flags = sorted((r.split("--amp ")[1].split()[0], r.split("--compile ")[1].split()[0]) for r in mine)
        assert flags == [("false", "false"), ("false", "true"), ("true", "false"), ("true", "true")]
        assert all("--max-steps-per-epoch" in r and "--device cuda" in r and "--profile-epoch 3" in r for r in mine)
    assert not os.path.exists(os.path.join(ROOT, "build", "gpu-check-dry"))  # a dry run writes nothing


# ---------------------------------------------------------------- the harness's rooms
def test_every_section_module_is_registered_with_run_and_render():
    """benchmarks/sections/<name>.py is section <name> of run.SECTIONS, which is also what --only accepts."""
    folder = os.path.join(ROOT, "benchmarks", "sections")
    modules = sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
    assert sorted(bench.SECTIONS) == modules
    for name, section in bench.SECTIONS.items():
        assert section.__name__ == f"benchmarks.sections.{name}" and callable(section.run) and callable(section.render)
    assert set(bench.DEFAULT_SECTIONS) <= set(bench.SECTIONS)
    assert bench.parse_args(["--only", ",".join(bench.SECTIONS)]).sections == list(bench.SECTIONS)
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "throughput,nonsense"])


def test_the_report_prints_sections_in_the_registry_order():
    class Section:
        def __init__(self, name):
            self.name = name

        def render(self, result, results):
            return f"[{self.name}: {result}]"

    sections = {name: Section(name) for name in ("b", "a", "c")}
    text = report.render({"machine": {"cpu": "x", "cpus": 2}, "torch": "t", "load_start": None, "load_end": None,
                          "mode": "smoke", "c": 3, "b": 2, "a": 0}, sections)
    assert text.splitlines()[1:] == ["[b: 2]", "[c: 3]"]  # in the registry's order; a section without a result: none


def test_child_processes_get_the_environment_they_are_given(tmp_path, monkeypatch):
    """What a measurement process gets (code/ on the path, threads) is passed in, so two settings in one process
    do not leak into each other, and nothing is set when no thread count is asked for."""
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    show = [sys.executable, "-c", "import json, os; print('ENV ' + json.dumps({k: os.environ.get(k) for k in "
            "('PYTHONPATH', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'PYTHONUNBUFFERED')}))"]
    other = harness.child_environment(str(tmp_path / "other-code"), threads=3)
    default = harness.child_environment(harness.CODE)
    seen = harness.Child(show, str(tmp_path / "a.log"), other).run("ENV ")
    assert (seen["PYTHONPATH"], seen["OMP_NUM_THREADS"], seen["MKL_NUM_THREADS"], seen["PYTHONUNBUFFERED"]) == (
        str(tmp_path / "other-code"), "3", "3", "1")
    seen = harness.Child(show, str(tmp_path / "b.log"), default).run("ENV ")
    assert (seen["PYTHONPATH"], seen["OMP_NUM_THREADS"], seen["MKL_NUM_THREADS"]) == (harness.CODE, "7", None)
    context = harness.Bench(SimpleNamespace(code="/c"), {}, str(tmp_path / "logs"), other)
    child = context.child(show, "x")
    assert child.log_path == str(tmp_path / "logs" / "x.log") and child.env["OMP_NUM_THREADS"] == "3"
    assert context.train_py("/w", ["--train", "/d"], ["--seed", 1])[1:] == [
        "/c/train.py", "--train", "/d", "--model-dir", "/w/model", "--output-data-dir", "/w/data", "--output-dir",
        "/w/output", "--checkpoint-dir", "", "--seed", 1]


def test_run_py_starts_where_only_medimg_is_installed(tmp_path):
    """pip install -e . maps only medimg, and `python benchmarks/run.py` puts benchmarks/ itself on sys.path, not the
    checkout: run.py must still find its own modules (here the checkout is taken off sys.path first)."""
    script = os.path.join(ROOT, "benchmarks", "run.py")
    code = ("import os, runpy, sys\n"
            "import medimg.container\n"  # the client package, found as pip install -e . finds it
            f"root = os.path.realpath({ROOT!r})\n"
            "sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]\n"
            "assert 'benchmarks' not in sys.modules\n"
            f"sys.argv = [{script!r}, '--only', 'nonsense']\n"
            f"runpy.run_path({script!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "unknown section 'nonsense'; choose from ceiling, throughput, scaling, quality, dev, sizes" in proc.stderr
