# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up first.
# TORCH picks the torch build to install when the virtualenv has none (CI: TORCH=torch==2.13.0).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch>=2.3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convnet-installed
DEMO := out/demo

.PHONY: setup demo test bench proto clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $(STAMP)

demo: setup
	$(PY) -m convnet_cli.demo $(DEMO)

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

proto: setup
	$(PY) tools/gen_proto.py

clean:
	rm -rf out build *.egg-info .pytest_cache
