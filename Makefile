# Every target creates .venv itself, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint readme bench airflow-venv chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf out/demo
	$(BIN)/batch-infer inspect sample_data/digits_model
	$(BIN)/batch-infer run --job jobs/demo.toml
	$(BIN)/python jobs/show_results.py out/demo --truth-from-folder

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff (errors, pyflakes, warnings) over everything; mypy, strict, over the public calls.
lint: $(STAMP)
	$(BIN)/ruff check batch_infer tests benchmarks docs jobs sample_data
	$(BIN)/mypy

# The README's table of run options, regenerated from `batch-infer run --help`.
readme: $(STAMP)
	$(BIN)/python docs/readme_options.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/runtimes.py
	$(BIN)/python benchmarks/decode_cost.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/features.py

airflow-venv:
	bash jobs/airflow/install.sh

chromium:
	bash .ci/install-chromium.sh

clean:
	rm -rf out .pytest_cache
