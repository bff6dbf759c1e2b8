"""A non-editable wheel carries every package, module and data file the project has.

``pyproject.toml`` lists its packages explicitly (``[tool.setuptools] packages``) and maps
``cli/`` to ``convnet_cli`` and ``cli/torchrun_entry`` to ``convnet``, so a subpackage added
under ``convnet_io/`` but not to that list would work in the editable checkout and vanish from an
installed wheel. This test builds a wheel (offline, without build isolation) and compares its
contents with the ``.py`` files on disk.

The wheel is built from a copy of the sources in a temporary directory, so setuptools' in-tree
``build/`` and ``*.egg-info`` output never lands in (or races with others in) the checkout; the
copy holds exactly what the build reads (pyproject.toml, README.md, convnet_io/, cli/). The wheel
is never installed into the shared venv; its import check puts the unpacked wheel first on the
path of a separate interpreter.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _py_files(base: Path) -> set[str]:
    return {p.relative_to(base).as_posix() for p in base.rglob("*.py") if "__pycache__" not in p.parts}


def _pip_wheel(src: Path, dest: Path, isolation: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(dest), "-q"]
    if not isolation:
        cmd.insert(5, "--no-build-isolation")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    if not isolation:
        env["PIP_NO_INDEX"] = "1"  # nothing to fetch: offline by construction
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=src)


def _local_backend_ok() -> bool:
    """setuptools new enough for pyproject's ``build-system.requires`` (>=77) is importable."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return False
    return major >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("convnet_io", "cli"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dest = tmp / "dist"
    if _local_backend_ok():
        # setuptools is here: build offline with it; any failure is a real packaging error
        proc = _pip_wheel(src, dest, isolation=False)
        assert proc.returncode == 0, f"pip wheel --no-build-isolation failed:\n{proc.stdout}\n{proc.stderr}"
    else:
        # no usable setuptools in the venv: pip must fetch it, which needs an index
        proc = _pip_wheel(src, dest, isolation=True)
        if proc.returncode != 0:
            pytest.skip(f"pip cannot build the wheel offline (no setuptools>=77 in the venv):\n"
                        f"{proc.stderr[-2000:]}")
    wheels = list(dest.glob("convnet-*.whl"))
    assert len(wheels) == 1, list(dest.iterdir())
    return wheels[0]


@pytest.fixture(scope="module")
def names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _dist_info(names: set[str]) -> str:
    dirs = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    assert len(dirs) == 1, dirs
    return dirs.pop()


def test_wheel_has_the_caffe_schema(names):
    for f in ("caffe.proto", "caffe_pb2.py", "caffe_pb2.pyi", "__init__.py"):
        assert f"convnet_io/caffe/proto/{f}" in names, f


def test_wheel_has_every_convnet_io_module(names):
    on_disk = {f"convnet_io/{f}" for f in _py_files(ROOT / "convnet_io")}
    missing = sorted(on_disk - names)
    packages = sorted({m.rsplit("/", 1)[0].replace("/", ".") for m in missing})
    assert not missing, (f"not in the wheel: {missing}; add {packages} to [tool.setuptools] "
                         "packages in pyproject.toml")
    for sub in ("api", "graph", "graph/layers", "caffe", "caffe/proto", "caffe/caffemodel", "caffe2",
                "torch_model", "torch_model/converters", "onnx_export", "runtimes", "data", "train", "tools"):
        assert f"convnet_io/{sub}/__init__.py" in names, sub


def test_every_package_directory_is_a_package(names):
    """A directory of modules without ``__init__.py`` would not be found by an explicit list."""
    for base in (ROOT / "convnet_io", ROOT / "cli"):
        for d in [base, *[p for p in base.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
            if any(d.glob("*.py")):
                assert (d / "__init__.py").exists(), f"{d.relative_to(ROOT)} has modules but no __init__.py"


def test_wheel_has_the_cli_packages(names):
    cli_dir = ROOT / "cli"
    top = {p.name for p in cli_dir.glob("*.py")}
    for f in top:
        assert f"convnet_cli/{f}" in names, f
    entry = {p.name for p in (cli_dir / "torchrun_entry").glob("*.py")}
    assert {"__init__.py", "__main__.py"} <= entry
    for f in entry:
        assert f"convnet/{f}" in names, f
    # every module under cli/ lands in one of the two packages
    mapped = {("convnet/" + f[len("torchrun_entry/"):]) if f.startswith("torchrun_entry/")
              else "convnet_cli/" + f for f in _py_files(cli_dir)}
    assert not sorted(mapped - names)


def test_wheel_has_no_stray_top_level_packages(names):
    tops = {n.split("/")[0] for n in names}
    dist_info = _dist_info(names)
    assert tops == {"convnet_io", "convnet_cli", "convnet", dist_info}, tops
    assert not any(n.startswith("cli/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_wheel_entry_point(names, wheel):
    dist_info = _dist_info(names)
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        top_level = (zf.read(f"{dist_info}/top_level.txt").decode()
                     if f"{dist_info}/top_level.txt" in names else None)
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    assert cfg["console_scripts"]["convnet"].strip() == "convnet_cli.main:main"
    assert "Name: convnet" in metadata
    if top_level is not None:
        assert set(top_level.split()) == {"convnet_io", "convnet_cli", "convnet"}


def test_unpacked_wheel_imports_and_runs(wheel, tmp_path):
    """The unpacked wheel, first on the path, serves the CLI and ``python -m convnet`` without the
    checkout (catches imports of ``cli.`` or of files outside the packages)."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import convnet_io, convnet_cli.main, convnet, convnet_io.caffe.proto.caffe_pb2 as pb\n"
        "import pathlib, sys\n"
        f"site = pathlib.Path({str(site)!r}).resolve()\n"
        "for m in (convnet_io, convnet_cli.main, convnet, pb):\n"
        "    assert site in pathlib.Path(m.__file__).resolve().parents, (m.__name__, m.__file__)\n"
        "assert (pathlib.Path(pb.__file__).parent / 'caffe.proto').exists()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "convnet", "build", str(ROOT / "prototxt" / "alexnet.prototxt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "conv1" in proc.stdout
