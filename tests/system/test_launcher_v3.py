"""train.py under SDK v3's own drivers: scripts/local_train.py --launcher v3, run with .venv-sdk3's python, stages
the drivers ModelTrainer builds (sm_train.sh, environment.py, basic_script_driver.py / torchrun_driver.py) with
their /opt/ml redirected to the work folder, and runs the container's entrypoint. Success (argv as v3 passes it,
model and metrics), a bad hyperparameter (train.py's own failure line and exit code kept), SIGTERM, resume after
SIGKILL (the model an uninterrupted run makes), 2 processes under the torchrun driver, and 2 hosts.

The first tests are the redirection itself on the installed SDK's drivers (no training, fast)."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from medimg import launch_v3
from conftest import CODE, ROOT, SCRIPTS, make_dataset, read_failure
from test_resume import (EPOCHS, HPS, assert_same_final_model, checkpoint_files, epochs_trained, kill_group,
                         wait_for_checkpoint)

SDK3_PYTHON = os.path.join(ROOT, ".venv-sdk3", "bin", "python")
FAST = ["epochs=2", "batch-size=16", "ema=0", "patience=0", "amp=false", "tta=true", "model=smallcnn"]
slow = pytest.mark.slow  # real processes or trained models: not in make test-fast


def run_v3(data, work, hps=(), extra=(), timeout=400, python=SDK3_PYTHON):
    """scripts/local_train.py --launcher v3 under ``python``; the CompletedProcess."""
    assert os.path.exists(python), f"{python} is missing: make install builds .venv-sdk3"
    cmd = [python, os.path.join(SCRIPTS, "local_train.py"), "--launcher", "v3", "--data", str(data),
           "--out", str(work), *extra] + (["--hp", *hps] if hps else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start_v3(data, work, hps):
    """The same, in its own session (so the whole job can be killed as a group), logging to ``<work>.log``."""
    log = open(f"{work}.log", "w")
    cmd = [SDK3_PYTHON, os.path.join(SCRIPTS, "local_train.py"), "--launcher", "v3", "--data", str(data),
           "--out", str(work), "--hp", *hps]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log.close()
    return proc


def files_under(folder):
    return {os.path.relpath(os.path.join(d, f), folder): os.path.join(d, f)
            for d, _, fs in os.walk(folder) for f in fs}


# ---------------------------------------------------------------- the redirection, on the installed drivers
@pytest.fixture(scope="module")
def sdk_drivers(tmp_path_factory):
    """A copy of the installed SDK v3's container_drivers folder (what ModelTrainer uploads as sm_drivers)."""
    assert os.path.exists(SDK3_PYTHON), f"{SDK3_PYTHON} is missing: make install builds .venv-sdk3"
    found = subprocess.run([SDK3_PYTHON, "-c", "from sagemaker.train.constants import SM_DRIVERS_LOCAL_PATH as p; "
                            "print(p)"], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    copy = tmp_path_factory.mktemp("drivers") / "sm_drivers"
    shutil.copytree(found.stdout.strip(), copy)
    return copy


def test_redirect_drivers_moves_every_opt_ml_path(sdk_drivers, tmp_path):
    drivers = tmp_path / "sm_drivers"
    shutil.copytree(sdk_drivers, drivers)
    base = str(tmp_path / "ml")
    before = {rel: open(p, encoding="utf-8").read() for rel, p in files_under(drivers).items() if p.endswith(".py")}
    assert any("/opt/ml" in text for text in before.values())
    changed = launch_v3.redirect_drivers(str(drivers), base)
    assert changed == sorted(rel for rel, text in before.items() if "/opt/ml" in text)
    assert {"common/utils.py", "scripts/environment.py"} <= set(changed)
    after = {rel: open(p, encoding="utf-8").read() for rel, p in files_under(drivers).items()}
    assert not [rel for rel, text in after.items() if "/opt/ml" in text]
    assert not glob.glob(str(drivers / "**" / "__pycache__"), recursive=True)  # no stale bytecode of the old paths
    env = after["scripts/environment.py"]
    assert f'SM_MODEL_DIR = "{base}/model"' in env and f'ENV_OUTPUT_FILE = "{base}/input/sm_training.env"' in env
    assert 'SM_MASTER_ADDR = "algo-1"' in env  # one host: left as it is
    assert f'FAILURE_FILE = "{base}/output/failure"' in after["common/utils.py"]


def test_redirect_drivers_points_the_master_at_the_first_host(sdk_drivers, tmp_path):
    drivers = tmp_path / "sm_drivers"
    shutil.copytree(sdk_drivers, drivers)
    launch_v3.redirect_drivers(str(drivers), str(tmp_path / "ml"), master_addr="127.0.0.1")
    assert 'SM_MASTER_ADDR = "127.0.0.1"\n' in (drivers / "scripts" / "environment.py").read_text()
    with pytest.raises(RuntimeError, match="no `SM_MASTER_ADDR = \"algo-1\"` line"):  # drivers that changed: say so
        launch_v3.redirect_drivers(str(drivers), str(tmp_path / "ml"), master_addr="127.0.0.1")


def test_redirect_text_and_command():
    assert launch_v3.redirect_text("/opt/ml /opt/ml/x '/opt/ml' /opt/mlflow /opt/ml2", "/w") == (
        "/w /w/x '/w' /opt/mlflow /opt/ml2")
    assert launch_v3.v3_command(["/bin/bash"], ["-c", "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && "
                                                  "/opt/ml/input/data/sm_drivers/sm_train.sh"], "/w") == [
        "/bin/bash", "-c", "chmod +x /w/input/data/sm_drivers/sm_train.sh && /w/input/data/sm_drivers/sm_train.sh"]
    for bad in ("/tmp/my work", "/tmp/it's", "/tmp/a$b", "/tmp/a\\b"):
        with pytest.raises(ValueError, match="without spaces, quotes"):
            launch_v3.check_v3_base(bad)


def test_v3_env(monkeypatch):
    monkeypatch.setenv("SM_CHECKPOINT_DIR", "/elsewhere")  # v3 sets no SM_* of its own before environment.py
    env = launch_v3.v3_env("/venv/bin/python", 2, "job-1", {"MY_ENV": "1"})
    assert "SM_CHECKPOINT_DIR" not in env
    assert (env["TRAINING_JOB_NAME"], env["MY_ENV"], env["GLOO_SOCKET_IFNAME"]) == ("job-1", "1", "lo")
    assert env["PATH"].split(os.pathsep)[0] == "/venv/bin"


# ---------------------------------------------------------------- success
@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("v3job") / "work"
    # values as users and tuners write them (issue 18): a whole number as a float, a choice in another case
    result = run_v3(tiny_data, work, ["epochs=2.0" if hp == "epochs=2" else "model=SmallCNN" if hp == "model=smallcnn"
                                      else hp for hp in FAST])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return work, result


@slow
def test_train_py_gets_v3s_argv_in_the_order_given(trained):
    work, result = trained
    python3 = os.path.join(os.path.dirname(SDK3_PYTHON), "python3")
    # basic_script_driver.py's own line: dict order, booleans true/false, strings bare; then the checkpoint dir
    assert (f"Executing command: {python3} train.py --epochs 2.0 --batch-size 16 --ema 0 --patience 0 --amp false "
            f"--tta true --model SmallCNN --checkpoint-dir {work}/checkpoints") in result.stdout
    assert "Running Basic Script driver" in result.stdout and "local_train: job succeeded" in result.stdout
    config = json.loads((work / "model" / "model_config.json").read_text())
    assert (config["hyperparameters"]["amp"], config["hyperparameters"]["tta"]) == (False, True)  # parsed, not str
    assert (config["hyperparameters"]["epochs"], config["hyperparameters"]["model"]) == (2, "smallcnn")
    assert json.loads((work / "input" / "config" / "hyperparameters.json").read_text()) == {
        "epochs": "2.0", "batch-size": "16", "ema": "0", "patience": "0", "amp": "false", "tta": "true",
        "model": "SmallCNN", "checkpoint-dir": f"{work}/checkpoints"}


@slow
def test_the_drivers_ran_on_the_work_folder(trained):
    work, result = trained
    channels = json.loads((work / "input" / "config" / "inputdataconfig.json").read_text())
    assert list(channels) == ["test", "train", "val", "code", "sm_drivers"]  # ModelTrainer's order
    assert "SM_CHANNELS=['test', 'train', 'val', 'code', 'sm_drivers']" in result.stdout  # environment.py's
    assert f"SM_MODEL_DIR={work}/model" in result.stdout
    drivers = work / "input" / "data" / "sm_drivers"
    script = (drivers / "sm_train.sh").read_text()
    assert "basic_script_driver.py" in script and f"cd {work}/input/data/code" in script
    assert not [rel for rel, p in files_under(drivers).items() if "/opt/ml" in open(p, errors="replace").read()]
    assert sorted(os.listdir(work / "input" / "data" / "code")) == sorted(
        f for f in os.listdir(CODE) if f != "__pycache__")
    assert not os.path.exists(work / "output" / "success")  # v3 writes none: its exit code says it
    assert not os.path.exists(work / "output" / "failure")


@slow
def test_model_metrics_and_checkpoints(trained):
    work, _ = trained
    assert {"model.pth", "model_config.json", "label_dict.json", "code"} <= set(os.listdir(work / "model"))
    assert "inference.py" in os.listdir(work / "model" / "code")  # deploys as is
    m = json.loads((work / "output" / "data" / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2] and m["test"]["n"] == 24
    assert checkpoint_files(work) == ["checkpoint-0001-000000.pt", "checkpoint-0002-000000.pt"]


# ---------------------------------------------------------------- failures
@slow
def test_a_bad_hyperparameter_keeps_train_pys_line_and_exit_code(tiny_data, tmp_path):
    result = run_v3(tiny_data, tmp_path / "work", ["epochs=1", "lr=0"])
    assert result.returncode == 2, result.stdout[-3000:]  # train.py's own code: v3 keeps it (the toolkit says 1)
    failure = read_failure(tmp_path / "work")
    assert failure.strip() == "invalid hyperparameter: argument --lr: must be > 0, got '0'"  # nothing appended
    assert "An error occurred with exit code 2" in result.stdout  # sm_train.sh's trap saw it, kept the file
    assert "local_train: job FAILED (exit 2)" in result.stdout
    assert "failure reason: invalid hyperparameter: argument --lr: must be > 0, got '0'" in result.stdout


@slow
def test_under_sdk_v2_the_v3_launcher_says_which_python_to_use(tiny_data, tmp_path):
    result = run_v3(tiny_data, tmp_path / "work", ["epochs=1"], python=sys.executable, timeout=120)
    assert result.returncode != 0
    import sagemaker

    assert result.stderr.strip().splitlines()[-1] == (
        f"local_train: --launcher v3 runs SDK v3's own drivers, but this interpreter ({sys.executable}) has "
        f"SageMaker Python SDK {sagemaker.__version__}: run it with .venv-sdk3/bin/python (make install builds it)")
    assert not os.path.exists(tmp_path / "work" / "input" / "data")  # refused before staging anything


@slow
def test_under_sdk_v3_the_default_launcher_says_what_is_missing(tiny_data, tmp_path):
    """.venv-sdk3 has no sagemaker-training toolkit: the default launcher (v2) says so in one line, no traceback."""
    cmd = [SDK3_PYTHON, os.path.join(SCRIPTS, "local_train.py"), "--data", str(tiny_data), "--out",
           str(tmp_path / "work")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "local_train: --launcher v2 (the default) runs the sagemaker-training toolkit, which is not installed in "
        "this interpreter; pip install sagemaker-training (make install does it in .venv), or use --launcher v3 "
        "where SDK v3 is installed")


def test_a_hyperparameter_given_again_overrides_as_a_repeated_flag_does():
    from medimg import local_train

    assert local_train.parse_hp(["epochs=2", "lr=0.1", "epochs=3"]) == {"epochs": 3, "lr": 0.1}


# ---------------------------------------------------------------- spot: SIGTERM and SIGKILL, then resume
@pytest.fixture(scope="module")
def spot_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("spot3") / "data", counts={"train": 60, "val": 10}, size=32)


@pytest.fixture(scope="module")
def reference(spot_data, tmp_path_factory):
    """The uninterrupted v3 run every interrupted one must reproduce."""
    work = tmp_path_factory.mktemp("reference3") / "work"
    result = run_v3(spot_data, work, HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    return work


@slow
def test_sigkill_then_a_second_run_resumes_and_matches(spot_data, reference, tmp_path):
    work = tmp_path / "work"
    proc = start_v3(spot_data, work, HPS)
    try:
        wait_for_checkpoint(proc, work)
    finally:
        kill_group(proc)  # the whole job at once: a reclaimed spot instance
    done = max(int(n.split("-")[1]) for n in checkpoint_files(work))
    assert done < EPOCHS, f"the job finished before the kill landed ({checkpoint_files(work)})"

    result = run_v3(spot_data, work, HPS)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"resumed from {work}/checkpoints/checkpoint-{done:04d}-000000.pt: {done} epoch(s) done" in result.stdout
    assert epochs_trained(result.stdout) == list(range(done + 1, EPOCHS + 1))
    assert_same_final_model(work, reference)


@slow
def test_sigterm_reaches_train_py_which_checkpoints_and_says_so(spot_data, tmp_path):
    import train

    work = tmp_path / "work"
    proc = start_v3(spot_data, work, HPS)
    try:
        wait_for_checkpoint(proc, work)
        os.kill(proc.pid, signal.SIGTERM)  # to local_train, which passes it to train.py below the driver
        code = proc.wait(timeout=120)
    finally:
        kill_group(proc)
    log = open(f"{work}.log").read()
    assert code == train.SIGTERM_EXIT_CODE, log[-3000:]
    assert "received SIGTERM: finishing the current step, then checkpointing and exiting" in log
    failure = read_failure(work)
    assert failure.startswith("training stopped by SIGTERM") and "Training Execution failed" not in failure
    assert os.path.exists(work / "model" / "model.pth")


# ---------------------------------------------------------------- the torchrun driver
@slow
def test_two_processes_under_the_v3_torchrun_driver(tiny_data, tmp_path):
    work = tmp_path / "work"
    result = run_v3(tiny_data, work, ["epochs=1", "batch-size=8", "patience=0"], extra=["--nproc", "2"])
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    assert "Running Torchrun Driver" in out
    assert "torchrun --nnodes=1 --nproc_per_node=2 train.py --epochs 1 --batch-size 8 --patience 0" in out
    assert "distributed: backend=gloo rank=0/2" in out and "distributed: backend=gloo rank=1/2" in out
    drivers = work / "input" / "data" / "sm_drivers"
    assert json.loads((drivers / "distributed.json").read_text())["process_count_per_node"] == 2
    assert "model.pth" in os.listdir(work / "model")
    assert json.loads((work / "output" / "data" / "metrics.json").read_text())["test"]["n"] == 24  # both ranks


@slow
def test_two_hosts_under_the_v3_torchrun_driver(tiny_data, tmp_path):
    work = tmp_path / "work"
    result = run_v3(tiny_data, work, ["epochs=1", "batch-size=8", "patience=0"], extra=["--nodes", "2"])
    assert result.returncode == 0, result.stdout[-4000:]
    for rank in (0, 1):
        assert (f"torchrun --nnodes=2 --nproc_per_node=1 --master_addr=127.0.0.1 --master_port=7777 "
                f"--node_rank={rank} train.py") in result.stdout
    assert "world_size=2" in result.stdout
    assert "model.pth" in os.listdir(work / "model")
    assert os.listdir(work / "nodes" / "127.0.0.2" / "model") == []  # rank 0 alone saves
