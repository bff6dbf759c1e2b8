"""The graph IR (parse, upgrade, filter, infer shapes, summarise) needs neither torch nor onnx.

``convnet build`` and ``convnet_io.load_graph`` should not pay for importing torch (seconds, and
hundreds of MB), ONNX, ONNX Runtime or OpenCV. Each check runs in a fresh interpreter so that what
other tests imported does not count.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"
HEAVY = ("torch", "onnx", "onnxruntime", "cv2")

# Printed as the last line by every snippet: which heavy modules ended up imported, and who
# imported torch first (the module whose import triggered it), for a readable failure.
REPORT = textwrap.dedent("""
    import json as _json, sys as _sys
    _loaded = sorted(m for m in %r if m in _sys.modules)
    print(_json.dumps({"loaded": _loaded}))
""") % (HEAVY,)


def run_snippet(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (cwd = the repository) and return the REPORT dict."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + REPORT], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_chain(module: str, heavy: str) -> str:
    """The import chain from ``module`` to ``heavy`` (from ``python -X importtime``), for messages."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    lines = [l for l in proc.stderr.splitlines() if l.startswith("import time:")]
    # importtime prints children before parents, indented by depth: walk up from the first hit.
    names = [(len(l.split("|")[-1]) - len(l.split("|")[-1].lstrip()), l.split("|")[-1].strip())
             for l in lines]
    for i, (depth, name) in enumerate(names):
        if name == heavy:
            chain, want = [name], depth
            for d, n in names[i + 1:]:
                if d < want:
                    chain.append(n)
                    want = d
            return " <- ".join(chain)
    return "(not imported)"


IR_MODULES = ("convnet_io.graph", "convnet_io.caffe.builder", "convnet_io.graph.layers", "convnet_io.api.loading",
              "convnet_io.graph.summary", "convnet_io.caffe2.listing", "convnet_io.caffe.upgrade",
              "convnet_io.caffe.netstate", "convnet_io.caffe.prototxt", "convnet_io.errors")


def test_graph_ir_imports_no_torch_onnx_or_opencv():
    out = run_snippet(f"""
        import importlib
        for m in {IR_MODULES!r}:
            importlib.import_module(m)
        from convnet_io.api.loading import load_graph
        from convnet_io.graph.summary import format_table, summarize
        g = load_graph("prototxt/alexnet.prototxt")
        s = summarize(g)
        assert s["total_params"] > 60_000_000, s["total_params"]
        assert "conv1" in format_table(s)
        # the Caffe2 listing reader and a net with phase-filtered Data layers, too
        g2 = load_graph("prototxt/alexnet_caffe2.txt")
        summarize(g2)
        for phase in ("TRAIN", "TEST"):
            summarize(load_graph("prototxt/caffenet.prototxt", phase=phase))
    """)
    assert out["loaded"] == [], f"the graph IR imported {out['loaded']}"


def test_import_convnet_io_is_light():
    """``import convnet_io`` (the package, with its ``Net``/``load`` API) defers torch and onnx."""
    out = run_snippet("""
        import convnet_io
        assert callable(convnet_io.load) and callable(convnet_io.load_graph)
    """)
    chains = {m: import_chain("convnet_io", m) for m in out["loaded"]}
    assert out["loaded"] == [], f"import convnet_io pulls in heavy modules: {chains}"


def test_convnet_build_command_imports_no_torch():
    """What ``convnet build NET`` runs, in-process: the CLI group and the build command."""
    out = run_snippet("""
        import contextlib, io, json
        from convnet_cli.main import cli
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cli(["build", "prototxt/alexnet.prototxt", "--json"], prog_name="convnet",
                standalone_mode=False)
        summary = json.loads(buf.getvalue())
        assert summary["layers"][0]["name"] == "data", summary["layers"][0]
        with contextlib.redirect_stdout(io.StringIO()):
            cli(["build", "prototxt/caffenet.prototxt", "--phase", "train"], prog_name="convnet",
                standalone_mode=False)
    """)
    assert out["loaded"] == [], f"convnet build imported {out['loaded']}"


@pytest.mark.skipif(not (MODELS / "bvlc_googlenet" / "train_val.prototxt").exists(),
                    reason="shared caffe-models not present")
def test_train_val_graphs_import_no_torch():
    out = run_snippet(f"""
        from convnet_io.api.loading import load_graph
        from convnet_io.graph.summary import summarize
        for model in ("bvlc_alexnet", "bvlc_googlenet"):
            for phase in ("TRAIN", "TEST"):
                summarize(load_graph({str(MODELS)!r} + "/" + model + "/train_val.prototxt", phase=phase))
    """)
    assert out["loaded"] == [], f"building train_val graphs imported {out['loaded']}"
