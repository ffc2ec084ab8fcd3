# make demo  — set up (once) and run the main job on the embedded default model
# make test  — set up (once) and run the test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0   # CPU wheel; GPU users: make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu124"

.PHONY: setup demo test clean

$(BIN)/qwen-sft: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/qwen-sft

demo: setup
	$(BIN)/qwen-sft demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache runs
