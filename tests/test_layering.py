"""Stages point down: no module imports one that comes later in the pipeline (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qwen_sft"
ORDER = ["errors", "config", "tools", "data", "tokenizer", "template_render", "template", "collate", "loss", "model",
         "template_proof", "train", "generate", "evaluate", "merge", "serve_engine", "serve", "preview", "demo", "cli"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qwen_sft."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("qwen_sft."))
    return names


def test_every_module_is_placed():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules <= set(ORDER), f"add {modules - set(ORDER)} to ORDER and docs/ARCHITECTURE.md"


def test_no_module_reaches_back_up_the_pipeline():
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("__init__", "__main__"):
            continue
        rank = ORDER.index(path.stem)
        later = [m for m in _imports(path) if ORDER.index(m) >= rank and m != path.stem]
        assert not later, f"{path.name} imports later stage(s) {later}"
