# make demo: install, then train on the embedded PneumoniaMNIST sample through the real SageMaker toolkit.
# make test: install if needed, then run the whole suite; make test-fast: the unit tier only (well under a minute).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# this project's own environments take this torch (from local disk here); Studio users keep their image's
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
DEMO_DATA := build/demo-data
DEMO_WORK := build/demo-work

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

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

$(DEMO_DATA)/train: data/pneumoniamnist_trainval.npz medimg/prepare_data.py | $(STAMP)
	rm -rf $(DEMO_DATA)
	$(PY) scripts/prepare_data.py --npz data/pneumoniamnist_trainval.npz --out $(DEMO_DATA).tmp
	# the file's val split is the demo's test channel; train.py holds out its own val from train
	mv $(DEMO_DATA).tmp/val $(DEMO_DATA).tmp/test
	mv $(DEMO_DATA).tmp $(DEMO_DATA)

demo: $(STAMP) $(DEMO_DATA)/train
	$(PY) scripts/local_train.py --data $(DEMO_DATA) --out $(DEMO_WORK)
	$(PY) scripts/show_metrics.py $(DEMO_WORK)/output/data/metrics.json

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# make bench BENCH_ARGS="--quick" (or --only throughput,ceiling ...): see benchmarks/run.py --help
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
