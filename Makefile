# make demo  — set up (once) and run the main job on the embedded default model
# make test      — set up (once), lint, and run the fast tier of the tests (minutes)
# make test-all  — lint and run every test, the slow end-to-end ones too (what CI runs)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0   # CPU wheel; GPU users: make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu124"

.PHONY: setup demo lint test test-all clean

$(BIN)/qwen-sft: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/qwen-sft

demo: setup
	$(BIN)/qwen-sft demo

lint: setup
	$(BIN)/ruff check src tests bench scripts

test: lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache runs
