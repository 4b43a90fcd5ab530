# advlab: `make demo` runs the embedded default attack, `make test` runs the CPU test suite.
# Each target creates .venv on first use (needs only the package registries).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.advlab-installed
# A list from setup.cfg, the one source of versions: $(SETUP_CFG) SECTION KEY
SETUP_CFG := $(PYTHON) -c "import configparser, sys; c = configparser.ConfigParser(); c.read('setup.cfg'); \
  print(' '.join(c[sys.argv[1]][sys.argv[2]].split()))"
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(shell [ "$$(id -u)" = 0 ] || echo sudo -n) apt-get install -y -q

.PHONY: demo test lint docs test-gpu bench bench-gpu fashion-models fashion-binarization hgd-fashion install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $$($(SETUP_CFG) advlab:no-deps packages)
	# Fashion-MNIST for the CPU experiments (Debian's dataset-fashion-mnist; torchvision downloads it elsewhere)
	@test -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || $(APT_INSTALL) dataset-fashion-mnist \
	  || (apt-get update -q && $(APT_INSTALL) dataset-fashion-mnist) \
	  || echo "make: could not install dataset-fashion-mnist (needs root); Fashion-MNIST tests will say how to get it"
	# Chromium renders the report in tests/test_report_browser.py (it skips, saying how, where this fails)
	@command -v chromium >/dev/null || $(APT_INSTALL) chromium \
	  || (apt-get update -q && $(APT_INSTALL) chromium) \
	  || echo "make: could not install chromium (needs root); the browser test will skip and say how to get it"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/advlab run configs/quickstart.yaml

# One pytest worker per core (at most 4), each on one thread: 571 tests in ~10 min on 2 cores (12-06).
# pytest exit 5 means no test was collected: the suite is missing, a failure here.
test: $(STAMP)
	@OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n auto --maxprocesses 4 -m "not slow and not gpu" tests; \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): the suite is missing"; fi; \
	exit $$rc

# ruff on the rules of pyproject.toml (CI runs it before make test)
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The manual (mkdocs.yml) into site/, every warning an error; CI runs it before make test. Its tools (setup.cfg's
# docs extra, read from there) live in their own .venv-docs: mkdocs-material needs requests>=2.33 and the test
# extra's torchattacks pins requests~=2.25. The build imports nothing of advlab but its torch-free results types.
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.advlab-docs-installed
$(DOCS_STAMP): setup.cfg
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q $$($(SETUP_CFG) options.extras_require docs)
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=. $(DOCS_VENV)/bin/mkdocs build --strict --quiet

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu tests

bench: $(STAMP)
	$(PY) bench/boundary.py

# Every GPU benchmark in one call (a short GPU lease): tables on stdout and in $(OUT)/bench.txt
bench-gpu: $(STAMP)
	PATH=$(VENV)/bin:$$PATH sh bench/gpu.sh $(or $(OUT),reports/bench-gpu)

# The lab's own Fashion-MNIST classifiers, for configs/uap-transfer-fashion.yaml and hgd-fashion.yaml
MODELS := reports/models
fashion-models: $(MODELS)/fashion_cnn.pt $(MODELS)/fashion_mlp.pt

$(MODELS)/fashion_%.pt: | $(STAMP)
	mkdir -p $(MODELS)
	$(PY) -m advlab.cli.lab_nets classifier --arch fashion_$* --out $@

# The plain and adversarially trained Fashion-MNIST CNN pair of the robust-accuracy benchmarks (bench/robust_models.py),
# then the binarization-test study of configs/fashion-binarization.yaml
$(MODELS)/fashion_cnn_madry.pt: | $(STAMP)
	$(PY) -c "import sys; sys.path.insert(0, 'bench'); from robust_models import fashion_pair; fashion_pair()"

fashion-binarization: $(MODELS)/fashion_cnn_madry.pt
	$(VENV)/bin/advlab run configs/fashion-binarization.yaml

# An HGD (LGD, width 0.25) against the Fashion-MNIST CNN, trained on CPU in minutes, then the
# defense study of configs/hgd-fashion.yaml
$(MODELS)/hgd-fashion/hgd-lgd.pt: $(MODELS)/fashion_cnn.pt
	$(VENV)/bin/advlab defend --hgd --train --model advlab.zoo.smallnets:fashion_cnn --weights $< --mean 0.5 --std 0.5 \
	  --input-size 28 --data fashion-mnist:train -n 10000 --width 0.25 --epochs 5 --lr 3e-3 --batch-size 64 \
	  --eps-max 0.25 --train-attacks pgd --pgd-steps 5 --out $(MODELS)/hgd-fashion

hgd-fashion: $(MODELS)/hgd-fashion/hgd-lgd.pt
	$(VENV)/bin/advlab run configs/hgd-fashion.yaml

clean:
	rm -rf $(VENV) *.egg-info
