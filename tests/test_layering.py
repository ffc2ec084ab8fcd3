"""The folder listing is the pipeline: stage packages point down, the library never imports a command, modules stay
small (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qwen_sft"
# the stages, in pipeline order: a module imports only its own stage and the stages before it
ORDER = ["utils", "template", "data", "config", "runs", "model", "preflight", "train", "generation", "eval", "export",
         "server", "commands", "cli"]
TOP_LEVEL = {"__init__", "__main__", "cli"}  # the only modules outside a stage package
MAX_LINES = 320


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _stage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if len(parts) > 1 else {"__main__": "cli", "__init__": "utils"}.get(parts[0], parts[0])


def _module_name(path: Path) -> str:
    parts = ["qwen_sft", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Every qwen_sft module `path` imports, whatever the form: `import qwen_sft.a.b`, `from qwen_sft.a import b`,
    `from qwen_sft import a`, relative imports, and imports inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "qwen_sft")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1
                package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "qwen_sft":
                continue
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # `from qwen_sft import train` names a stage
    return {n for n in names if n != "qwen_sft"}


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def test_every_module_is_in_a_stage():
    loose = {str(p.relative_to(PACKAGE)) for p in _modules() if _stage(p) not in ORDER and p.stem not in TOP_LEVEL}
    assert not loose, f"put these in a stage package (and docs/ARCHITECTURE.md): {sorted(loose)}"


def test_no_module_reaches_up_the_pipeline():
    for path in _modules():
        rank = ORDER.index(_stage(path))
        later = sorted(m for m in _imported(path) if (s := _stage_of(m)) and ORDER.index(s) > rank)
        assert not later, f"{path.relative_to(PACKAGE)} imports later stage(s): {later}"


def test_the_library_never_imports_a_command():
    for path in _modules():
        if _stage(path) not in ("commands", "cli"):
            assert not {m for m in _imported(path) if _stage_of(m) in ("commands", "cli")}, path


def test_no_import_cycle_inside_a_stage():
    modules = {_module_name(p): p for p in _modules()}
    edges = {name: {m for m in _imported(path) if m in modules and m != name and modules[m].name != "__init__.py"}
             for name, path in modules.items()}
    done, active = set(), []

    def visit(name):
        if name in active:
            raise AssertionError(f"import cycle: {' -> '.join(active[active.index(name):] + [name])}")
        if name in done:
            return
        active.append(name)
        for other in edges[name]:
            visit(other)
        active.pop()
        done.add(name)

    for name in modules:
        visit(name)


def test_the_checker_sees_every_import_form(tmp_path):
    file = tmp_path / "probe.py"
    file.write_text("import qwen_sft.train.recipe\nfrom qwen_sft import server\nfrom qwen_sft.eval.report import x\n"
                    "def f():\n    from qwen_sft.export import merge\n")
    assert {_stage_of(m) for m in _imported(file) if _stage_of(m)} == {"train", "server", "eval", "export"}


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"
