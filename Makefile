# vos_ros developer entry points. `make demo` and `make test` are the two commands README.md
# promises; both call `make setup`, which is idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vos_ros-installed
# Every process that touches DDS stays on loopback with a random domain (never the real network).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell shuf -i 1-200 -n 1)
export ROS_LOG_DIR ?= $(CURDIR)/log/ros

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(BIN)/vos_demo --out out/demo

# --timeout: a hung test fails after 10 min (with its stack) instead of eating CI's 90 min;
# the longest test takes about 2 min on a loaded 2-core machine
test: setup
	$(BIN)/python -m pytest test -q -rs --timeout 600

lint: setup
	$(BIN)/python -m flake8 vos_ros test bench launch setup.py

bench: setup
	$(BIN)/python bench/backends.py --help

clean:
	rm -rf build install log out .pytest_cache
