"""The import graph of jcw and latency has no cycle; `import jcw` works without torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jcw", "latency")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """Modules of ``known`` that ``name`` imports anywhere (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {e for e in edges if e in known and e != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_jcw_and_latency_import_graph_has_no_cycle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert graph["latency.lut"] >= {"jcw.core.space", "jcw.core.util"}  # the walker sees real edges
    assert "jcw.search.runner" in graph["jcw.api"]  # including function-level imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_torch_free_base_imports_no_torch_side_module():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    base = [m for m in known if m.startswith("jcw.core")]
    for name in base:
        assert all(dep.startswith("jcw.core") for dep in graph[name]), (name, graph[name])


TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any `import torch` raises ImportError
import jcw
assert issubclass(jcw.UsageError, ValueError)
space = jcw.SearchSpace.for_model("resnet20")
arch = space.decode(space.uniform(0.5))
ms = jcw.predict_latency(arch, device="a53", threads=4)
full = jcw.predict_latency(space.decode(space.full()), device="a53", threads=4)
assert 0 < ms < full, (ms, full)
try:
    jcw.predict_latency(arch, device="a99")
except jcw.UsageError as e:
    assert "a99" in str(e)
else:
    raise AssertionError("no UsageError")
print(jcw.Engine.__name__, round(ms, 4), round(full, 4))
"""


def test_import_jcw_works_without_torch():
    res = subprocess.run([sys.executable, "-c", TORCH_FREE], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Engine ")
