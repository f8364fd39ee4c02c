# Two commands for a fresh machine (see README.md): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EMEM := $(VENV)/bin/emem
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean-build

setup:
	@bash scripts/setup.sh

test: setup
	@EMEM_REQUIRE_ROS=1 bash scripts/with_env.sh $(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: setup
	@bash scripts/with_env.sh $(EMEM) experiment run --config config/experiments/demo.yaml --out runs/demo

bench: setup
	@bash scripts/with_env.sh $(EMEM) bench all --json --out runs/bench.json

clean-build:
	rm -rf build/ros install/ros
