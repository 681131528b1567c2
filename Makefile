# The two commands: `make demo` and `make test`. Each creates .venv when missing and installs
# what it needs (the stamp files re-run the install when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= taskcam-demo

.PHONY: demo test docs lint format bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

# The original YOLOv5's classes, for the tests of yolo: on its checkpoints: its PyPI package pins
# huggingface-hub<0.25, which transformers cannot share, so it comes without its requirements;
# importing its model classes needs seaborn and pkg_resources (setuptools<81) besides ours.
$(VENV)/.dev-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'yolov5==7.0.14'
	$(PY) -m pip install --quiet 'seaborn>=0.11' 'setuptools<81'
	touch $@

demo: $(VENV)/.demo-installed
	$(VENV)/bin/taskcam demo --out $(OUT)

# The report tests drive Debian's chromium (never a downloaded browser): installed here where
# missing and apt-get is usable (root); otherwise those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "chromium missing and apt-get unusable (not root): the report browser tests skip"; \
	  fi; }

test: $(VENV)/.dev-installed chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

# The documentation and its API reference (mkdocs.yml, docs/), strict: a warning is an error.
docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site
	@echo "open site/index.html"

bench: $(VENV)/.dev-installed
	$(PY) benchmarks/classic.py

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
