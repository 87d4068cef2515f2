# Two commands set everything up on a fresh machine:
#   make run    -> .venv + install + the default search on the built-in synthetic twin
#   make test   -> .venv + install + the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= postgres,mysql,onnx,dev
TRIALS ?= 30
ARGS   ?=
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test setup bench lint clean

# The stamp carries a checksum of pyproject.toml: setting up twice installs nothing, and
# a changed dependency list triggers exactly one new install.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m search run --trials $(TRIALS) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/search.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
