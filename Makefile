# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use (torch's CPU wheel first, then the locked dependencies) and are safe to re-run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_HOME ?= .lab
export LAB_HOME
# Quiet the messages of libraries that talk a lot on import.
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::FutureWarning
export GIT_PYTHON_REFRESH ?= quiet

.PHONY: venv demo test ui lint clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing torch 2.13.0 (CPU wheel) first, then the locked dependencies ..."
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch, torchtitan, dagster, mlflow, dvc, datatrove, hydra; print('environment ready')"
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/lab materialize experiment=demo

# Two workers, a test file each (the 2-core CI machine), in collection order: the end-to-end files first
# (tests/conftest.py), not xdist's default of the files with the most tests first.
test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check .

# Dagster webserver (lineage, staleness, launchpad) and MLflow UI, both on 127.0.0.1.
# webserver.json tells `lab` which webserver to ask for a reload when it records a new experiment.
# The storage profile (LAB_STORAGE=shared: PostgreSQL) decides the instance file and MLflow's store, as for `lab`.
ui: venv
	@dagster_home=$$($(BIN)/python -m orchestration.services dagster-home) && \
	mlflow_uri=$$($(BIN)/python -m orchestration.services mlflow-uri) && \
	echo "Dagster: http://127.0.0.1:3000   MLflow: http://127.0.0.1:5000   (Ctrl-C stops both)" && \
	{ DAGSTER_HOME=$$dagster_home $(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000 & \
	dagster_pid=$$!; \
	echo '{"url": "http://127.0.0.1:3000"}' > $$dagster_home/webserver.json; \
	trap 'kill $$dagster_pid; rm -f $$dagster_home/webserver.json' EXIT INT TERM; \
	$(BIN)/mlflow ui --backend-store-uri "$$mlflow_uri" -h 127.0.0.1 -p 5000; }

clean:
	rm -rf $(LAB_HOME)
