# One entry point for people and CI. `make demo` and `make test` build the
# virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -c constraints.txt
STAMP  := $(VENV)/.installed
# The extras installed into the virtual environment; CI adds spark (a 450 MB
# download) for the Spark recipe's test: `make test EXTRAS=dev,dask,spark`.
EXTRAS ?= dev,dask
# The shared datasets folder the benchmarks read: `make bench SHARED=path`.
SHARED ?= ../shared/datasets

.PHONY: install demo report test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP) -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@# A fresh study each time, so the demo always shows the same 30 trials.
	rm -rf runs/demo runs/demo.journal
	$(BIN)/anomtune tune datasets/cardio.csv --label is_anomaly --trials 30 --seed 0 \
		--study demo --storage runs/demo.journal --out runs/demo

# The HTML report of the demo run and a screenshot of it (needs Chromium).
report: $(STAMP)
	test -f runs/demo/summary.json || $(MAKE) demo
	$(BIN)/anomtune report runs/demo -o runs/demo/report.html --screenshot docs/report.png

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 -q
	@# The detector and training tests again on the autograd path (no hand-written step).
	ANOMTUNE_TRAINING=autograd $(BIN)/python -m pytest -n 2 -q tests/test_detector.py tests/test_training.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(PIP) -q -e '.[$(EXTRAS),bench]'
	$(BIN)/python benchmarks/training.py $(SHARED)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
