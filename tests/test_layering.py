"""Stages point down, and the library never imports a command (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qwen_sft"
# the library, in pipeline order: a module (or package) imports only ones before it
ORDER = ["errors", "files", "usage", "hub", "config", "train_args", "arguments", "tools", "data", "sources",
         "tokenizer", "template_render", "template", "data_cache", "dataset", "collate", "loss", "attention",
         "forecast", "run", "model", "template_proof", "inference", "preview", "checkpoints", "train_log",
         "train_model", "trainer", "micro_run", "checks", "train", "forecast_check", "generation", "generate",
         "evaluate", "merge", "server", "commands", "cli"]
MAX_LINES = 330


def _stage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qwen_sft."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("qwen_sft."))
    return names


def _modules():
    return [p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py") or p.parent != PACKAGE]


def test_every_module_is_placed():
    stages = {_stage(p) for p in _modules()} - {"__init__", "__main__"}
    assert stages <= set(ORDER), f"add {stages - set(ORDER)} to ORDER and docs/ARCHITECTURE.md"


def test_no_module_reaches_back_up_the_pipeline():
    for path in _modules():
        stage = _stage(path)
        rank = ORDER.index(stage)
        later = [m for m in _imports(path) if m != stage and ORDER.index(m) >= rank]
        assert not later, f"{path.relative_to(PACKAGE)} imports later stage(s) {later}"


def test_the_library_never_imports_a_command():
    for path in _modules():
        if _stage(path) not in ("commands", "cli"):
            assert "commands" not in _imports(path), path


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"
