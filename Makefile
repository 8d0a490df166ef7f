# Two entry points: `make demo` (main job on embedded data) and `make test`.
# Both create .venv once and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: demo test install bench data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Exact versions of the big wheels only here; pyproject.toml keeps ranges for users.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/toy_manifold.py --out-dir $(OUT)

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/run_all.py

# Optional real data sets (Debian packages); the demo and tests need none of them.
data:
	apt-get update && apt-get install -y dataset-fashion-mnist wamerican espeak-ng

clean:
	rm -rf $(VENV) runs
