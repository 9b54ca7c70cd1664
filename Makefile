# The two commands of the README. Each installs what it needs into .venv first.
#   make run   - the main job: the default study on the built-in synthetic data
#   make test  - lint (ruff check, ruff format --check) and the test suite
PYTHON ?= python3.11
VENV ?= .venv

.PHONY: run test install browser slurm lint
run: $(VENV)/.installed
	$(VENV)/bin/vcr-study launch

test: $(VENV)/.installed browser slurm lint
	$(VENV)/bin/python -m pytest

# ruff, as pyproject.toml configures it: lint rules, then the formatting
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Debian's chromium, for the test that renders the MLflow UI headless (installed when root).
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
	  echo "could not install chromium: the MLflow UI test will be skipped"

# Debian's SLURM and munge, for the tests that submit a study to a one-node SLURM started on this
# machine (tests/test_slurm.py; installed when root, the tests skipped otherwise).
slurm:
	@command -v slurmctld >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (export DEBIAN_FRONTEND=noninteractive; \
	   apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1)) || \
	  echo "could not install slurm-wlm and munge: the SLURM tests will be skipped"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@
