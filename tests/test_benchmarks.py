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
from benchmarks import ceiling, gpu_report, probe
from benchmarks import run as bench
from conftest import ROOT

pytestmark = pytest.mark.slow  # real processes or trained models: not in make test-fast


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One real run of make bench's throughput section on tiny settings: train.py (through the probe) and the
    plain ImageFolder loop, each in its own process."""
    build = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke", "--only", "throughput", "--cases",
           "smallcnn@28", "--build", str(build)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(build / "results.json") as fh:
        return json.load(fh), proc.stdout


def test_smoke_run_writes_results_json(smoke):
    results, _ = smoke
    assert results["mode"] == "smoke" and results["sections"] == ["throughput"]
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


def test_train_py_epoch_lines_are_parsed():
    line = epoch_log.epoch_line({"epoch": 7, "train_loss": 0.25, "val_loss": 0.2, "val_auc": 0.9712,
                                 "val_acc": 0.94, "lr": 0.001, "images_per_sec": 812.4})
    values = bench.epoch_log.parse_epoch("2026-01-01 00:00:00,000 INFO " + line)
    assert (values["epoch"], values["val_auc"], values["val_acc"], values["images_per_sec"]) == (7, 0.9712, 0.94,
                                                                                                    812.4)


def test_steady_state_leaves_out_the_warm_up_epoch():
    result = {"epochs": [{"epoch": 1, "images": 100, "images_per_sec": 10.0, "wall_s": 10, "cpu_s": 20},
                         {"epoch": 2, "images": 100, "images_per_sec": 100.0, "wall_s": 1, "cpu_s": 2},
                         {"epoch": 3, "images": 300, "images_per_sec": 300.0, "wall_s": 1, "cpu_s": 1}]}
    s = bench.steady(result)
    assert s["images_per_sec"] == pytest.approx(200.0) and s["epoch_ips"] == [100.0, 300.0]
    assert s["cpu_util"] == pytest.approx(1.5)


def test_ceiling_fraction_uses_the_step_dtype():
    rows = [{"case": "smallcnn@28", "model": "smallcnn", "amp_dtype": "bfloat16", "baseline_workers": 0,
             "batch_size": 128, "ratio": 3.5, "train_py": {"images_per_sec": 1000.0, "cpu_util": 1.9},
             "plain": {"0": {"images_per_sec": 250.0}}}]
    ceil = {"matmul": {"float32": {"flops": 100e9}, "bfloat16": {"flops": 200e9}},
            "flops_per_image": {"smallcnn@28:1": 60e6}}
    bench.attach_ceiling(rows, ceil)
    assert rows[0]["achieved_flops"] == pytest.approx(60e9)
    assert rows[0]["ceiling_fraction"] == pytest.approx(0.30) and rows[0]["ceiling_fraction_fp32"] == pytest.approx(0.6)
    assert rows[0]["plain_ceiling_fraction_fp32"] == pytest.approx(0.15)
    targets = bench.targets({"throughput": rows})
    assert [t["met"] for t in targets] == [True, True]
    text = bench.render({"machine": {"cpu": "x", "cpus": 2}, "torch": "t", "load_start": [0, 0, 0],
                         "load_end": [0, 0, 0], "mode": "full", "ceiling": dict(ceil, threads=2),
                         "throughput": rows, "targets": targets})
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
    text = bench.render({"machine": {"cpu": "x", "cpus": 2}, "torch": "t", "load_start": [0, 0, 0],
                         "load_end": [0, 0, 0], "mode": "full",
                         "ceiling": {"threads": 2, "matmul": {"float32": {"flops": 1e11}},
                                     "conv_speedup": {"smallcnn@28:1": out}}})
    assert "Convolutions alone" in text and re.search(r"smallcnn@28 .* %.2fx" % out["speedup"], text)


def test_synthetic_scaling_data_is_class_folders(tmp_path):
    npz = os.path.join(ROOT, "data", "pneumoniamnist_trainval.npz")
    folder = bench.synthetic(str(tmp_path), npz, 40, (20, 10))
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
    assert len(runs) == 8
    for model, size in (("smallcnn", "28"), ("resnet50", "224")):
        mine = [r for r in runs if f"--model {model} " in r and f"/data{size}/train" in r]
        flags = sorted((r.split("--amp ")[1].split()[0], r.split("--compile ")[1].split()[0]) for r in mine)
        assert flags == [("false", "false"), ("false", "true"), ("true", "false"), ("true", "true")]
        assert all("--max-steps-per-epoch" in r and "--device cuda" in r and "--profile-epoch 3" in r for r in mine)
    assert not os.path.exists(os.path.join(ROOT, "build", "gpu-check-dry"))  # a dry run writes nothing
