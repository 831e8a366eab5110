# Two entry points that do all the set-up on a fresh machine:
#   make demo [CKPT=path/to/maxq.pth.tar]   the whole pipeline (built-in example without CKPT)
#   make test                               the test suite (what CI runs)
PYTHON ?= python3
WORKDIR ?= maxq-demo
CKPT ?=

.PHONY: setup demo test fashion-data

setup:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev]'

demo: setup
	$(PYTHON) -m maxq_deploy demo --workdir $(WORKDIR) $(if $(CKPT),--checkpoint $(CKPT),)

# Real data for the tests that need it (they skip, saying how to get it, where apt-get is absent).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n )
fashion-data:
	@test -d /usr/share/datasets/fashion-mnist || ! command -v apt-get >/dev/null || { $(SUDO)apt-get update -qq && $(SUDO)apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 || echo "fashion-data: dataset-fashion-mnist not installed; its tests will skip"

test: setup fashion-data
	$(PYTHON) -m pytest -q -n 2 --durations=15
