"""One dependency direction: library packages never import the pipeline (``must.stages``,
``must.cli``), and no module imports its own package back (a cycle through its ``__init__``)."""

import ast
from pathlib import Path

import must

SOURCE = Path(must.__file__).parent
LIBRARIES = ("world", "data", "tasks", "models", "losses", "train", "label", "transfer", "report", "predict")


def is_module(name: str) -> bool:
    path = SOURCE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: Path) -> list[tuple[int, str]]:
    """The ``must`` modules a file imports, deferred imports too (``from P import m``: ``P.m``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}" if is_module(f"{node.module}.{alias.name}")
                       else node.module) for alias in node.names]
    return [(line, name) for line, name in sorted(set(found)) if name.split(".")[0] == "must"]


def test_libraries_never_import_the_pipeline_nor_their_own_package() -> None:
    broken = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        where, package = path.relative_to(SOURCE.parent), ".".join(parts[:-1])
        for line, name in imports_of(path):
            if parts[1] in LIBRARIES and name.split(".")[:2] in (["must", "stages"], ["must", "cli"]):
                broken.append(f"{where}:{line}: a library imports the pipeline ({name})")
            if path.name != "__init__.py" and len(parts) > 2 and name == package:
                broken.append(f"{where}:{line}: imports its own package back ({name})")
    assert not broken, "\n".join(broken)
