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
