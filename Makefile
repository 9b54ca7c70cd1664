# The two commands of the README. Each installs what it needs into .venv first.
#   make run   - the main job: the default study on the built-in synthetic data
#   make test  - the test suite
PYTHON ?= python3.11
VENV ?= .venv

.PHONY: run test install
run: $(VENV)/.installed
	$(VENV)/bin/vcr-study launch

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@
