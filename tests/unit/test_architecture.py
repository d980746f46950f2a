"""docs/architecture.md's table of layers is the truth about imports: every import between vad's packages
(at module level or inside a function) must be one the table allows, and the packages form no cycle."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def allowed(root: Path = ROOT) -> dict[str, set[str]]:
    text = (root / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\s*```\n(.*?)```\s*<!-- /layers -->", text, re.S).group(1)
    out = {}
    for line in block.strip().splitlines():
        name, _, deps = line.partition(":")
        out[name.strip()] = {d.strip() for d in deps.split(",") if d.strip()}
    return out


def imports(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """package -> {imported package: [files]} for imports between vad's top-level packages and modules."""
    found: dict[str, dict[str, list[str]]] = {}
    for path in (root / "vad").rglob("*.py"):
        parts = path.relative_to(root / "vad").parts
        package = parts[0] if len(parts) > 1 else parts[0][:-3]
        found.setdefault(package, {})
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                if name.startswith("vad."):
                    target = name.split(".")[1]
                    if target != package:
                        found[package].setdefault(target, []).append(str(path.relative_to(root)))
    return found


def test_every_package_is_in_the_table_of_layers():
    table = allowed()
    missing = sorted(p for p in imports() if p not in table and p != "__init__")
    assert not missing, f"docs/architecture.md's layers do not name {missing}"


def wrong_imports(root: Path = ROOT) -> list[str]:
    table = allowed(root)
    return [f"{package} imports {target} ({files[0]})" for package, targets in imports(root).items() if package in table
            for target, files in targets.items() if target not in table[package]]


def test_imports_between_packages_follow_the_layers():
    wrong = wrong_imports()
    assert not wrong, "imports the layers in docs/architecture.md do not allow:\n  " + "\n  ".join(wrong)


def test_the_layers_have_no_cycle():
    table = allowed()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("cycle: " + " -> ".join(path + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(table.get(node, ())):
            visit(dep, path + [node])
        state[node] = 2

    for package in table:
        visit(package, [])


def test_the_check_would_catch_a_wrong_import(tmp_path):
    """The checker itself: an io module importing scoring inside a function is reported."""
    fake = tmp_path / "vad" / "io"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from vad.scoring.job import run_scoring\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text((ROOT / "docs" / "architecture.md").read_text())
    assert wrong_imports(tmp_path) == ["io imports scoring (vad/io/bad.py)"]


def module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """vad module -> the vad modules it imports (module level or inside a function). A package that imports all
    its folders by name (`import_submodules`, the scorer and backbone registries) imports each of them."""
    files = {}
    for path in (root / "vad").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.startswith("vad")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vad"):
                found |= {known(f"{node.module}.{a.name}") for a in node.names}
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "import_submodules":
                found |= {m for m in files if m.rpartition(".")[0] == module}
        graph[module] = found - {module, ""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph` (strongly connected groups of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_a_circle():
    assert cycles(module_imports()) == []


def test_the_circle_check_would_catch_one(tmp_path):
    """A registry package importing its folders, one of which imports the package back, is a circle."""
    folder = tmp_path / "vad" / "models" / "scorers"
    (folder / "toy").mkdir(parents=True)
    (folder / "__init__.py").write_text("from vad.models.registry import import_submodules\nimport_submodules(__name__, __path__)\n")
    (folder / "toy" / "__init__.py").write_text("from vad.models.scorers import register\n")
    assert cycles(module_imports(tmp_path)) == [["vad.models.scorers", "vad.models.scorers.toy"]]


def test_no_function_in_vad_is_over_60_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in (ROOT / "vad").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, "split these functions:\n  " + "\n  ".join(long)


def test_no_module_in_vad_is_over_350_lines():
    """A module past 350 lines holds two things: split it where its data changes hands (as config/ by job section)."""
    long = [f"{path.relative_to(ROOT)} ({n} lines)" for path in sorted((ROOT / "vad").rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > 350]
    assert not long, "split these modules:\n  " + "\n  ".join(long)


def test_the_epoch_board_actor_does_not_import_torch():
    """The epoch bar's actor (a process per Ray Train run) loads only its own module: no torch in it."""
    import subprocess
    import sys

    probe = "import sys, vad.training.progress; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
