# Two entry points that do all the set-up on a fresh machine, each in its own virtualenv:
#   make demo [CKPT=path/to/maxq.pth.tar]   the whole pipeline (built-in example without CKPT;
#             [EXAMPLE=fashion|fashion-4of8]  EXAMPLE picks it: digits by default)
#   make test                               the test suite (what CI runs: .ci/run)
# The virtualenv is $(VENV) (default .venv, made by $(PYTHON) -m venv when missing); VENV= (empty)
# installs into $(PYTHON) itself instead. The set-up installs the tested versions of
# constraints.txt (`make lock` rewrites it, on purpose); torch is pinned here only, to the local
# CPU wheel of the project's machines (any other spec pulls several GB of CUDA packages there).
#   make test-random [SEED=N]   the suite in random order (pytest-randomly), SEED to repeat one
#   make test-latest            the suite in .venv-latest against the newest versions pyproject allows
#   make lock                   rewrite constraints.txt from a new virtualenv of the newest versions
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= maxq-demo
CKPT ?=
EXAMPLE ?=
SEED ?= random
TORCH ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
PYTEST_ARGS ?= -q -n 2 --durations=15

ifeq ($(strip $(VENV)),)
PY := $(PYTHON)
else
PY := $(VENV)/bin/python
endif
PIP := $(PY) -m pip install --quiet

.PHONY: setup demo test test-random test-latest lock fashion-data

ifneq ($(strip $(VENV)),)
$(PY):
	$(PYTHON) -m venv $(VENV)
endif

setup: $(PY)
	$(PIP) -c $(CONSTRAINTS) $(TORCH)
	$(PIP) -c $(CONSTRAINTS) -e '.[dev]'

demo: setup
	$(PY) -m maxq_deploy demo --workdir $(WORKDIR) $(if $(CKPT),--checkpoint $(CKPT),) $(if $(EXAMPLE),--example $(EXAMPLE),)

# Real data for the tests that need it (they skip, saying how to get it, where apt-get is absent).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n )
fashion-data:
	@test -d /usr/share/datasets/fashion-mnist || ! command -v apt-get >/dev/null || { $(SUDO)apt-get update -qq && $(SUDO)apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 || echo "fashion-data: dataset-fashion-mnist not installed; its tests will skip"

test: setup fashion-data
	$(PY) -m pytest $(PYTEST_ARGS)

test-random: setup
	$(PY) -m pytest $(PYTEST_ARGS) -p randomly --randomly-seed=$(SEED)

# The newest versions pyproject.toml allows (no constraints), in a virtualenv of their own: a new
# onnxruntime/onnx/numpy release shows up here as a named failure before it reaches constraints.txt.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet $(TORCH)
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	.venv-latest/bin/python -m pip list --format=freeze --exclude-editable
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS)

# constraints.txt: every version a fresh `make setup` installs besides torch (pinned above) and
# the project itself, from a new virtualenv of the newest allowed versions. Run `make test` after.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(TORCH)
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Tested versions for make setup (pip install -c constraints.txt): written by make lock,"; \
	  echo "# do not edit by hand. pyproject.toml keeps ranges; torch is pinned in the Makefile only."; \
	  echo "# Resolved on $$(.venv-lock/bin/python -c 'import platform; print("CPython", platform.python_version(), platform.machine())')."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|maxq-deploy)[=@ ]'; \
	} > $(CONSTRAINTS)
	rm -rf .venv-lock
