"""The house rules the package keeps: data flows one way through the stages, no import cycles, short functions.

Stages, lowest first: data -> text -> models -> embed -> train -> predict ->
evaluate -> report (predict imports no training or scoring code either). A module
may import from its own stage or a lower one, and from the shared top-level
modules (config, errors, hashing, methods, ...), which import no stage at all.
``segsam.cli`` is the one place that may reach every stage.
Rule ``evaluate``'s code hash follows imports, so an edit to training code
must not re-score every method: this test is what keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segsam"
STAGES = ("data", "text", "models", "embed", "train", "predict", "evaluate", "report")
#: Functions longer than this need a comment on their ``def`` line saying why (``# long: ...``).
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``segsam`` modules a file imports, anywhere in it (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("segsam"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segsam"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in files and m != name} for name, path in files.items()}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def test_stages_import_only_their_own_or_lower_stages() -> None:
    wrong = []
    for module, targets in _graph().items():
        if module == "segsam.cli":
            continue
        stage = _stage(module)
        for target in targets:
            other = _stage(target)
            if other is None:
                continue
            if stage is None:
                wrong.append(f"{module} (shared) imports the {other} stage ({target})")
            elif STAGES.index(other) > STAGES.index(stage):
                wrong.append(f"{module} ({stage}) imports {target} ({other}), a later stage")
    assert not wrong, "\n".join(sorted(wrong))


def test_report_needs_no_model_code() -> None:
    for module, targets in _graph().items():
        if _stage(module) == "report":
            assert not {t for t in targets if _stage(t) in ("models", "embed", "train")}, module


def test_predict_needs_no_training_or_scoring_code() -> None:
    for module, targets in _graph().items():
        if _stage(module) == "predict":
            assert not {t for t in targets if _stage(t) in ("train", "evaluate", "report")}, module


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def _long_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                header = "\n".join(lines[first - 1 : node.body[0].lineno])
                if length > MAX_FUNCTION_LINES and "# long:" not in header:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_functions_fit_on_a_screen() -> None:
    long = _long_functions()
    assert not long, "functions over 80 lines without a '# long: why' comment:\n" + "\n".join(long)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_a_package(stage: str) -> None:
    assert (PACKAGE / stage / "__init__.py").is_file()
