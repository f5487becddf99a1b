"""The package's layering, read from the imports of src/dglm_cli (ast; nothing is imported).

Imports inside functions count too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import dglm_cli

ROOT = Path(dglm_cli.__file__).parent
MODEL_LIBRARIES = ("transformers", "sentence_transformers")
MODEL_EDGE = {"dglm_cli.loaders", "dglm_cli.fetch", "dglm_cli.tiny"}  # loaders; fetch dequantizes GGUF; tiny builds random models


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module `name` imports (dglm_cli modules by full name, others by their top-level package)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from dglm_cli import assets` imports dglm_cli.assets
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names}
    return {m if m in MODULES else m.split(".")[0] for m in found}


GRAPH = {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def test_no_import_cycle():
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name not in done:
            path.append(name)
            for dependency in sorted(GRAPH[name]):
                visit(dependency)
            path.pop()
            done.add(name)

    for name in sorted(GRAPH):
        visit(name)


def test_library_never_imports_the_cli():
    library = [m for m in MODULES if not m.startswith("dglm_cli.cli") and m != "dglm_cli.__main__"]
    offenders = {m: sorted(d for d in GRAPH[m] if d.startswith("dglm_cli.cli")) for m in library}
    assert not {m: d for m, d in offenders.items() if d}


def test_samplers_know_nothing_of_guidance():
    assert "dglm_cli.guidance" not in GRAPH["dglm_cli.sampler"]  # guidance wraps the denoise function instead


def test_model_libraries_only_at_the_loader_edge():
    offenders = {m: sorted(set(MODEL_LIBRARIES) & imports(m)) for m in MODULES if m not in MODEL_EDGE}
    assert not {m: libs for m, libs in offenders.items() if libs}


def test_the_package_root_is_imported_only_by_the_cli():
    """Library modules take the version from dglm_cli._version, never from the package root."""
    offenders = [m for m in MODULES if "dglm_cli" in GRAPH[m] and not m.startswith("dglm_cli.cli")]
    assert not offenders
