# Two entry points that do all the set-up on a fresh machine:
#   make demo [CKPT=path/to/maxq.pth.tar]   the whole pipeline (built-in example without CKPT)
#   make test                               the test suite (what CI runs)
PYTHON ?= python3
WORKDIR ?= maxq-demo
CKPT ?=

.PHONY: setup demo test

setup:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[dev]'

demo: setup
	$(PYTHON) -m maxq_deploy demo --workdir $(WORKDIR) $(if $(CKPT),--checkpoint $(CKPT),)

test: setup
	$(PYTHON) -m pytest -q -n 2 --durations=15
