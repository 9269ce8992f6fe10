"""graph_runtime must not import the node library or the server (DESIGN.md: imports run one way)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "graph_runtime"
FORBIDDEN = ("nodes", "server")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_no_runtime_module_imports_nodes_or_server() -> None:
    offenders = [
        f"{path.name} imports {module}"
        for path in sorted(RUNTIME.glob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_importing_the_runtime_loads_neither_nodes_nor_server() -> None:
    code = (
        "import sys, graph_runtime, graph_runtime.cli, graph_runtime.api;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nodes', 'server')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reading_and_validating_a_workflow_never_imports_torch() -> None:
    code = (
        "import sys, graph_runtime.cli, graph_runtime.validation, graph_runtime.workflow,"
        " graph_runtime.registry, graph_runtime.executor, graph_runtime.cache, graph_runtime.device;"
        "graph_runtime.cli.build_parser(['--help']);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'server', 'nodes')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
