# Two commands do all set-up on a fresh machine with Python 3.11, git and make:
#   make demo   runs the whole pipeline on the embedded synthetic scenes (runs/demo/)
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dvsa demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

# On a CUDA machine: trains every stage a few steps on the GPU (fp32 and bf16 AMP, DDP with 2+ GPUs) against the
# same steps on the CPU and prints a table; without a GPU it says so and succeeds.
gpu-check: $(STAMP)
	$(PY) -m dvsa.scripts.gpu_check

clean:
	rm -rf runs build *.egg-info
