"""The package layout is a one-way flow: foundations -> graph -> formats -> backends -> runtimes ->
training -> API -> tools -> CLI. Every import in every module (module level or inside a function)
must point down that flow, so the structure the folders show stays true."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Which convnet_io packages each package may import (besides itself). "errors" and "atomic" are the
# foundations every package may use.
FOUNDATIONS = {"errors", "atomic", "version", "limits", "terminal", "paths", "protowire"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "atomic": {"errors"},
    "version": set(),
    "protowire": set(),
    "limits": {"errors"},
    "terminal": set(),
    "paths": {"errors"},
    "graph": set(),
    "caffe": {"graph"},
    "caffe2": {"graph", "caffe"},
    "torch_model": {"graph"},
    "onnx_export": {"graph"},
    "data": {"graph", "caffe"},
    "runtimes": {"graph", "caffe", "torch_model", "onnx_export"},
    "train": {"graph", "caffe", "torch_model", "data", "runtimes"},
    "api": {"graph", "caffe", "caffe2", "torch_model", "onnx_export", "runtimes"},
    "tools": {"graph", "caffe", "caffe2", "torch_model", "onnx_export", "runtimes", "data", "train", "api"},
    # pycaffe's interface sits on the library and its tools (image preprocessing, drawing)
    "pycaffe": {"graph", "caffe", "torch_model", "data", "train", "api", "tools"},
}
# The command line sees only the public surface: the package itself, its API and its tools.
CLI_ALLOWED = {"", "api", "tools", "errors", "pycaffe", "limits", "terminal", "paths"}
# Modules the graph package must never import, however indirectly it would be reached.
HEAVY = ("torch", "onnx", "onnxruntime", "cv2", "google.protobuf")


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "convnet_io")
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module named by an import statement in ``path``, with its line (relative imports
    resolved against the file's package)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    pkg = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # ``from convnet_io import tools`` names a package too
            if mod == "convnet_io":
                out += [(node.lineno, f"convnet_io.{a.name}") for a in node.names
                        if (ROOT / "convnet_io" / a.name).is_dir() or (ROOT / "convnet_io" / f"{a.name}.py").exists()]
    return out


def _target_package(module: str) -> str | None:
    if module == "convnet_io":
        return ""
    if not module.startswith("convnet_io."):
        return None
    return module.split(".")[1]


LIBRARY = sorted((ROOT / "convnet_io").rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_point_down_the_flow(path):
    if path.name.endswith("_pb2.py"):
        return
    own = _package_of(path)
    if own == "":  # convnet_io/__init__.py: the public names
        return
    allowed = ALLOWED.get(own)
    assert allowed is not None, f"{own}: a new top-level package; give it a place in ALLOWED"
    for line, module in _imports(path):
        target = _target_package(module)
        if target is None or target == own or target in FOUNDATIONS:
            continue
        assert target in allowed, (f"{path.relative_to(ROOT)}:{line} imports {module}: the {own} package "
                                   f"may import only {sorted(allowed | FOUNDATIONS)}")


def test_graph_imports_no_format_backend_or_heavy_library():
    for path in (ROOT / "convnet_io" / "graph").rglob("*.py"):
        for line, module in _imports(path):
            assert not any(module == h or module.startswith(h + ".") for h in HEAVY), \
                f"{path.relative_to(ROOT)}:{line} imports {module}"


@pytest.mark.parametrize("path", sorted((ROOT / "cli").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_cli_imports_only_the_public_api(path):
    for line, module in _imports(path):
        target = _target_package(module)
        if target is None:
            continue
        assert target in CLI_ALLOWED, (f"{path.relative_to(ROOT)}:{line} imports {module}: the CLI may import "
                                       "only convnet_io, convnet_io.api, convnet_io.tools and convnet_io.errors")


def test_no_import_cycle_between_packages():
    """The allowed edges themselves form no cycle (a package never reaches back to itself)."""
    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in ALLOWED.get(a, ()))

    for pkg in ALLOWED:
        assert not reaches(pkg, pkg, set()), pkg


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule is not vacuous: a graph module importing torch_model is caught."""
    bad = ROOT / "convnet_io" / "graph" / "_probe_wrong_import.py"
    bad.write_text("from convnet_io.torch_model import CaffeModule\n")
    try:
        with pytest.raises(AssertionError, match="graph package may import only"):
            test_library_imports_point_down_the_flow(bad)
    finally:
        bad.unlink()
