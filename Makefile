# make demo: install, then train on the embedded PneumoniaMNIST sample through the real SageMaker toolkit.
# make test: install if needed, then run the whole suite (tests/unit and tests/system); make test-fast: the unit tier
# only (tests/unit: in process, under a minute); make test-system: the system tier (real processes, training runs).
# make install builds two client environments: .venv (SageMaker Python SDK v2, the training toolkit, moto, MLflow,
# the test tools) and .venv-sdk3 (SDK v3 with MLflow, for the tests that run the ModelTrainer path and its drivers).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
VENV3 := .venv-sdk3
PIP3 := $(VENV3)/bin/pip
STAMP3 := $(VENV3)/.installed
SDK3_PACKAGES := "sagemaker>=3,<4" ipykernel matplotlib pandas scikit-learn captum mlflow sagemaker-mlflow
# code/ on the containers' oldest torch (the 2.6 training and inference images): make test-torch26
VENV26 := .venv-torch26
STAMP26 := $(VENV26)/.installed
TORCH26_PIN := torch==2.6.0 torchvision==0.21.0
TORCH26_TESTS := $(shell grep -rl --include="test_*.py" "mark.torch26" tests)
# this project's own environments take this torch (from local disk here); Studio users keep their image's
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
DEMO_DATA := build/demo-data
DEMO_WORK := build/demo-work

.PHONY: install install-torch26 demo test test-fast test-system test-torch26 bench clean

install: $(STAMP) $(STAMP3)

# Reinstall only when a requirements file or the package metadata changed (or the venv is new).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet --no-deps sagemaker-pytorch-training==3.0.0
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

# SDK v3 client: the same torch (from local disk here, no second download), SDK v3 and what the notebook imports;
# medimg without dependencies (it declares none; code/ is read from this checkout).
$(STAMP3): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(VENV3)/bin/python || $(PYTHON) -m venv $(VENV3)
	$(PIP3) install --quiet --upgrade pip
	$(PIP3) install --quiet $(TORCH_PIN)
	$(PIP3) install --quiet $(SDK3_PACKAGES)
	$(PIP3) install --quiet --no-deps -e .
	touch $(STAMP3)

# torch 2.6.0 from PyPI (about 3 GB of CUDA wheels), then requirements.txt as a Studio user installs it next to
# their image's torch: it must keep that torch (tests/system/test_container_torch.py checks the version it runs on).
# The training toolkit too (requirements-dev.txt's pins), as in the training image, so that the torch26 tests that
# train (tests/system/test_pixel_jobs.py) run train.py through it on torch 2.6.
install-torch26: $(STAMP26)

$(STAMP26): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(VENV26)/bin/python || $(PYTHON) -m venv $(VENV26)
	$(VENV26)/bin/pip install --quiet --upgrade pip
	$(VENV26)/bin/pip install --quiet $(TORCH26_PIN) pytest
	$(VENV26)/bin/pip install --quiet -r requirements.txt
	$(VENV26)/bin/pip install --quiet $$(grep -oE '^(sagemaker-training==[0-9.]+|retrying|six)' requirements-dev.txt)
	$(VENV26)/bin/pip install --quiet --no-deps sagemaker-pytorch-training==3.0.0
	touch $(STAMP26)

test-torch26: $(STAMP26)
	MEDIMG_EXPECT_TORCH=2.6.0 $(VENV26)/bin/python -m pytest -q -m torch26 $(TORCH26_TESTS)

$(DEMO_DATA)/train: data/pneumoniamnist_trainval.npz medimg/prepare_data.py | $(STAMP)
	rm -rf $(DEMO_DATA)
	$(PY) scripts/prepare_data.py --npz data/pneumoniamnist_trainval.npz --out $(DEMO_DATA).tmp
	@echo "make demo: the file's val split becomes the test channel; train.py holds out its own val from train"
	mv $(DEMO_DATA).tmp/val $(DEMO_DATA).tmp/test
	mv $(DEMO_DATA).tmp $(DEMO_DATA)

demo: $(STAMP) $(DEMO_DATA)/train
	$(PY) scripts/local_train.py --data $(DEMO_DATA) --out $(DEMO_WORK)
	$(PY) scripts/show_metrics.py $(DEMO_WORK)/output/data/metrics.json

# make test runs the test files on TEST_WORKERS processes (pytest-xdist; each file stays on one worker, so its
# module fixtures are built once; each worker's torch gets its share of the cores, tests/conftest.py). Three on two
# cores: the system tier waits on processes, ports and servers, and a third worker fills those waits (8:55 for the
# whole suite on 2 idle cores). make test TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 3
test: $(STAMP) $(STAMP3)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP) $(STAMP3)
	$(PY) -m pytest -q tests/unit

test-system: $(STAMP) $(STAMP3)
	$(PY) -m pytest -q tests/system

# make bench BENCH_ARGS="--quick" (or --only throughput,ceiling ...): see benchmarks/run.py --help
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
