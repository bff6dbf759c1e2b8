"""Which heavy modules each light command path imports (not how long it takes: that is the bench's).

``convnet --help`` needs neither NumPy nor a reader; ``import convnet_io`` resolves its API names on
first use; ``convnet export --onnx --no-check`` goes from the caffemodel reader into the ONNX file
without torch; the ONNX Runtime check imports torch only because it compares against the module.
Each check runs in a fresh interpreter so that what other tests imported does not count.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT.parent / "shared" / "caffe-models" / "mnist" / "lenet.prototxt"
HEAVY = ("numpy", "torch", "onnx", "onnxruntime", "cv2", "google.protobuf")

REPORT = textwrap.dedent("""
    import json as _json, sys as _sys
    print(_json.dumps({"loaded": sorted(m for m in %r if m in _sys.modules)}))
""") % (HEAVY,)


def loaded_after(code: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + REPORT], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["loaded"]


def cli_snippet(*args: str) -> str:
    return f"""
        import contextlib, io
        from convnet_cli.main import cli
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cli({list(args)!r}, prog_name="convnet", standalone_mode=False)
            except SystemExit as e:
                assert not e.code, e.code
    """


def test_help_imports_nothing_heavy():
    assert loaded_after(cli_snippet("--help")) == []
    assert loaded_after(cli_snippet("export", "--help")) == []


def test_build_reads_a_net_without_numpy(tmp_path):
    net = tmp_path / "n.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                   'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }\n'
                   'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n')
    assert loaded_after(cli_snippet("build", str(net))) == ["google.protobuf"]


# convnet's own modules count too: `--help` reads no net, and `build` reads one with the Caffe reader
# and the layer families its layers use, nothing of a backend, the data layers' readers or training.
FOUNDATIONS = {"errors", "atomic", "version", "limits", "terminal", "paths"}
UNUSED_FAMILIES = {"detection", "loss_extra", "mobile", "normalization", "pyramid", "recurrent", "segmentation",
                   "shape_ops", "two_stage", "yolo"}


def convnet_modules_after(code: str) -> list[str]:
    report = "\nimport json as _json, sys as _sys\nprint(_json.dumps(sorted(m for m in _sys.modules if m.startswith(('convnet_io', 'convnet_cli')))))"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + report], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_only_the_foundations():
    for args in (("--help",), ("build", "--help")):
        loaded = [m for m in convnet_modules_after(cli_snippet(*args)) if m.startswith("convnet_io")]
        assert {m.split(".")[1] for m in loaded if "." in m} <= FOUNDATIONS, (args, loaded)


def test_build_imports_the_reader_and_the_families_of_its_layers(tmp_path):
    net = tmp_path / "n.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                   'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }\n'
                   'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n')
    loaded = convnet_modules_after(cli_snippet("build", str(net)))
    # no other command's module: their options are made for `convnet --help` only
    assert [m for m in loaded if m.startswith("convnet_cli")] == ["convnet_cli", "convnet_cli.build",
                                                                  "convnet_cli.main", "convnet_cli.options"]
    loaded = [m for m in loaded if m.startswith("convnet_io")]
    packages = {m.split(".")[1] for m in loaded if "." in m}
    assert packages <= FOUNDATIONS | {"api", "caffe", "caffe2", "graph", "tools"}, loaded
    assert [m for m in loaded if m.startswith("convnet_io.tools.")] == ["convnet_io.tools.build"]
    assert not {m.rsplit(".", 1)[1] for m in loaded if m.startswith("convnet_io.graph.layers.")} & UNUSED_FAMILIES
    assert {"convnet_io.graph.layers.vision", "convnet_io.graph.layers.activation"} <= set(loaded)
    # the weights' reader, the deploy writer and Caffe2's translators are for other commands
    assert not {"convnet_io.caffe.caffemodel", "convnet_io.caffe.weights", "convnet_io.caffe.deploy",
                "convnet_io.caffe2.listing", "convnet_io.caffe2.netdef"} & set(loaded), loaded


def test_every_command_module_is_listed():
    import click
    from convnet_cli import main

    ctx = click.Context(main.cli)
    names = main.cli.list_commands(ctx)
    assert set(main._COMMANDS) <= set(names) and len(names) >= 15
    for name in names:
        assert main.cli.get_command(ctx, name).name == name


def test_import_convnet_io_defers_its_api():
    assert loaded_after("import convnet_io, convnet_io.api; convnet_io.ConvnetError") == []
    loaded = loaded_after("""
        import convnet_io
        from convnet_io import ConvnetError, Net, load, load_graph
        from convnet_io.api import load as api_load
        assert api_load is load and isinstance(Net, type) and callable(load_graph)
        assert issubclass(ConvnetError, Exception)
        assert {"Net", "load", "load_graph"} <= set(dir(convnet_io))
    """)
    assert "torch" not in loaded and "onnx" not in loaded


def test_unknown_attribute_is_an_attribute_error():
    import convnet_io

    with pytest.raises(AttributeError):
        convnet_io.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def lenet_weights(tmp_path_factory):
    from convnet_io.api.loading import load_blobs, load_graph
    from convnet_io.caffe.caffemodel import write_caffemodel
    from convnet_io.caffe.weights import layer_blobs

    graph = load_graph(LENET)
    path = tmp_path_factory.mktemp("lenet") / "lenet.caffemodel"
    write_caffemodel(path, layer_blobs(graph, load_blobs(graph, seed=3)[0]))
    return path


@pytest.mark.skipif(not LENET.exists(), reason="shared caffe-models not present")
def test_export_no_check_imports_no_torch(lenet_weights, tmp_path):
    out = tmp_path / "lenet.onnx"
    loaded = loaded_after(cli_snippet("export", str(LENET), "--weights", str(lenet_weights),
                                      "--onnx", str(out), "--no-check"))
    assert "torch" not in loaded and "onnxruntime" not in loaded and "cv2" not in loaded, loaded
    onnx.checker.check_model(str(out), full_check=True)


@pytest.mark.skipif(not LENET.exists(), reason="shared caffe-models not present")
def test_export_file_holds_the_caffemodel_weights(lenet_weights, tmp_path):
    """The streamed file is the in-memory export: same nodes, same initialisers, same values."""
    from convnet_io.api.loading import load_blobs, load_graph
    from convnet_io.onnx_export import export_onnx
    from convnet_io.onnx_export.writer import export_to_file

    graph = load_graph(LENET)
    blobs, _ = load_blobs(graph, lenet_weights)
    out = tmp_path / "lenet.onnx"
    written = export_to_file(graph, blobs, out)
    assert written.weights >= 2  # conv and ip weights streamed, small ones inline
    got, want = onnx.load(str(out)), export_onnx(graph, blobs)
    assert [n.SerializeToString() for n in got.graph.node] == [n.SerializeToString() for n in want.graph.node]
    assert list(got.graph.input) == list(want.graph.input) and list(got.graph.output) == list(want.graph.output)
    g = {t.name: onnx.numpy_helper.to_array(t) for t in got.graph.initializer}
    w = {t.name: onnx.numpy_helper.to_array(t) for t in want.graph.initializer}
    assert g.keys() == w.keys()
    for k in w:
        assert g[k].dtype == w[k].dtype and g[k].shape == w[k].shape and np.array_equal(g[k], w[k]), k
    # and the weights are the caffemodel's own, not a re-fill
    assert np.array_equal(g["conv1_w"], blobs["conv1"][0]) and np.array_equal(g["ip2_b"], blobs["ip2"][1])


@pytest.mark.skipif(not LENET.exists(), reason="shared caffe-models not present")
def test_check_runs_one_session_for_both_batches(lenet_weights, tmp_path, monkeypatch):
    import convnet_io.runtimes.onnxruntime_session as ors
    from convnet_io.tools.convert import convert_to_onnx

    made = []
    real = ors.make_session

    def counting(*a, **k):
        made.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(ors, "make_session", counting)
    result = convert_to_onnx(LENET, tmp_path / "lenet.onnx", weights=lenet_weights, device="cpu")
    assert len(made) == 1 and made[0] == str(tmp_path / "lenet.onnx")  # read from the file written
    assert result.check["ok"] and result.check["batches"] == [1, 7]
    assert result.check["worst_rel"] < 1e-4


def test_check_catches_a_wrong_file(tmp_path, monkeypatch):
    """The check compares against the module: a file with altered weights fails it."""
    from helpers import input_layer

    from convnet_io.onnx_export import writer
    from convnet_io.tools.convert import convert_to_onnx

    net = tmp_path / "net.prototxt"
    net.write_text(input_layer((2, 3, 16, 16)) + """
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 8 kernel_size: 3 } }
        layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
    """)
    real = writer.write_model
    monkeypatch.setattr(writer, "write_model",
                        lambda model, weights, path: real(model, [(n, a * 1.01) for n, a in weights], path))
    result = convert_to_onnx(net, tmp_path / "net.onnx", device="cpu")
    assert not result.check["ok"] and result.check["worst_rel"] > 1e-3
