# Two entry points: `make demo` (the VAE on the embedded digits) and `make test`.
# Both create .venv once and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: demo toy test install bench docs docs-check gallery katex data clean examples gpu-kit

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
	elbo_vs_iwae own_pair compression outliers completion representations gallery \
	super_resolution similarity
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
	$(PY) benchmarks/test_set_evidence.py
	$(PY) benchmarks/distributed_scaling.py

# The documentation site, built offline into site/. Its maths is typeset by KaTeX, taken from
# the npm registry (not a CDN) and copied into docs/assets/katex/ (ignored), so the built
# site needs no network.
KATEX_VERSION := 0.19.1
KATEX := docs/assets/katex
KATEX_NPM := build/katex-npm
$(KATEX)/.version-$(KATEX_VERSION):
	npm install --silent --no-audit --no-fund --prefix $(KATEX_NPM) katex@$(KATEX_VERSION)
	rm -rf $(KATEX) && mkdir -p $(KATEX)
	cp -r $(KATEX_NPM)/node_modules/katex/dist/katex.min.js \
		$(KATEX_NPM)/node_modules/katex/dist/katex.min.css \
		$(KATEX_NPM)/node_modules/katex/dist/fonts $(KATEX_NPM)/node_modules/katex/LICENSE $(KATEX)/
	touch $@
katex: $(KATEX)/.version-$(KATEX_VERSION)

docs: install katex
	$(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# What benchmarks/gpu_check.sh needs on the GPU machine, which has no network and no Pyro:
# the wheels it lacks (CPython 3.12, manylinux x86-64; it has torch, numpy, opt-einsum, tqdm,
# pytest) and the Fashion-MNIST IDX files, in an ignored folder that the device tool carries
# (carry: ["gpu-kit"]). Everything that travels must stay within 64 MiB.
GPU_KIT := gpu-kit
GPU_KIT_WHEELS := pyro-ppl==1.9.2 pyro-api==0.1.2 constriction==0.5.0
FASHION_MNIST := /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
	t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
gpu-kit:
	@for f in $(FASHION_MNIST_FILES); do test -f $(FASHION_MNIST)/$$f || { \
		echo "gpu-kit: no $(FASHION_MNIST)/$$f; run 'make data' first"; exit 1; }; done
	rm -rf $(GPU_KIT) && mkdir -p $(GPU_KIT)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--dest $(GPU_KIT) $(GPU_KIT_WHEELS)
	cp $(addprefix $(FASHION_MNIST)/,$(FASHION_MNIST_FILES)) $(GPU_KIT)/
	@kit=$$(du -sb $(GPU_KIT) | cut -f1); \
	repo=$$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
		| awk '{s += $$1} END {print s + 0}'); \
	total=$$((kit + repo)); \
	ls -l $(GPU_KIT); \
	echo "gpu-kit: $$((kit / 1024)) KiB; with the repository's $$((repo / 1024)) KiB:" \
		"$$((total / 1024)) KiB of the 65536 KiB (64 MiB) the device tool carries"; \
	test $$total -le 67108864 || { echo "gpu-kit: over 64 MiB"; exit 1; }

# Builds the site, serves it on 127.0.0.1 and opens every page in headless Chromium (Debian's
# chromium package, installed when missing): fails on a broken image or link, TeX left unrendered or a console error;
# a screenshot of each page lands in site-check/. Not part of `make test` (needs Chromium).
docs-check: docs
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) .ci/site_check.py site --screenshots site-check

# The figures, audio and sampled words of docs/gallery.md, on Fashion-MNIST when `make data`
# has installed it (else the 8x8 digits); trained models are cached in runs/gallery-models/,
# so a second run only evaluates and draws.
gallery: install
	$(PY) examples/gallery.py --out-dir docs/figures/gallery --cache-dir runs/gallery-models

# Optional real data sets (Debian packages); the demo and tests need none of them.
data:
	apt-get update && apt-get install -y dataset-fashion-mnist wamerican espeak-ng

clean:
	rm -rf $(VENV) runs
