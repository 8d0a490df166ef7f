# Two entry points: `make demo` (the VAE on the embedded digits) and `make test`.
# Both create .venv once and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: demo toy test install bench docs data clean examples

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

# Every example with its default settings, results under runs/<name>/.
EXAMPLES := toy_manifold vae pixel_likelihoods pixelcnn pixel_vae language_model wavenet \
	elbo_vs_iwae own_pair compression outliers completion representations super_resolution \
	similarity
examples: install
	for name in $(EXAMPLES); do $(PY) examples/$$name.py --out-dir runs/$$name || exit 1; done

# Quality and speed benchmarks, JSON in benchmarks/results/. The Fashion-MNIST ones need
# `make data`. Speed figures are ratios measured side by side in one process.
bench: install
	$(PY) benchmarks/digits_objectives.py
	$(PY) benchmarks/vae_vs_pyro_example.py
	$(PY) benchmarks/pixelcnn_vs_vae.py
	$(PY) benchmarks/pixelcnn_sampling.py
	$(PY) benchmarks/wavenet_sampling.py
	$(PY) benchmarks/svi_step_overhead.py
	$(PY) benchmarks/evidence_speed.py
	$(PY) benchmarks/distributed_scaling.py

# The documentation site, built offline into site/.
docs: install
	$(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# Optional real data sets (Debian packages); the demo and tests need none of them.
data:
	apt-get update && apt-get install -y dataset-fashion-mnist wamerican espeak-ng

clean:
	rm -rf $(VENV) runs
