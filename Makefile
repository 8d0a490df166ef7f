# Two entry points: `make demo` (the VAE on the embedded digits) and `make test`.
# Both create .venv once and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: demo toy test install bench data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Exact versions of the big wheels only here; pyproject.toml keeps ranges for users.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/vae.py --out-dir $(OUT)

toy: install
	$(PY) examples/toy_manifold.py --out-dir runs/toy_manifold

test: install
	$(PY) -m pytest -q tests

# Quality benchmarks; vae_vs_pyro_example needs Fashion-MNIST (`make data`).
bench: install
	$(PY) benchmarks/digits_objectives.py
	$(PY) benchmarks/vae_vs_pyro_example.py

# Optional real data sets (Debian packages); the demo and tests need none of them.
data:
	apt-get update && apt-get install -y dataset-fashion-mnist wamerican espeak-ng

clean:
	rm -rf $(VENV) runs
