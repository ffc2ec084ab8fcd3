"""Stages point down: no module imports one that comes later in the pipeline (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qwen_sft"
ORDER = ["errors", "config", "data", "tokenizer", "template", "collate", "loss", "model", "train", "generation",
         "generate", "evaluate", "merge", "server", "serve", "preview", "demo", "cli"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qwen_sft."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("qwen_sft."))
    return names


def _stage(path: Path) -> str:
    """A module's stage: its own name, or its package's for a module of a subpackage (generation/, server/)."""
    return path.parent.name if path.parent != PACKAGE else path.stem


def _modules() -> list[Path]:
    return [p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")] + list(PACKAGE.glob("*/*.py"))


def test_every_module_is_placed():
    modules = {_stage(p) for p in _modules()}
    assert modules <= set(ORDER), f"add {modules - set(ORDER)} to ORDER and docs/ARCHITECTURE.md"


def test_no_module_reaches_back_up_the_pipeline():
    for path in _modules():
        rank = ORDER.index(_stage(path))
        later = [m for m in _imports(path) if ORDER.index(m) >= rank and m != _stage(path)]
        assert not later, f"{path.name} imports later stage(s) {later}"
