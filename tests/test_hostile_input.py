"""Hostile and careless input: limits checked before work, one-line errors, the user's files never
overwritten, control characters never echoed. Each test is one finding that used to fail."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from helpers import input_layer

from convnet_io import limits

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"

TINY = input_layer((1, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
"""


@pytest.fixture(autouse=True)
def _default_budget(monkeypatch):
    monkeypatch.delenv("CONVNET_MAX_MEMORY", raising=False)
    limits.set_memory_budget(None)
    yield
    limits.set_memory_budget(None)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.prototxt"
    p.write_text(TINY)
    return p


# -- 1. memory bombs --------------------------------------------------------------------------

def test_inner_product_of_ten_to_the_13_weights_is_refused_at_build(tmp_path):
    p = tmp_path / "big.prototxt"
    p.write_text(input_layer((1, 1000000)) + """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 10000000 } }""")
    for cmd in (("build", p), ("init", p, "-o", tmp_path / "w.caffemodel")):
        line = assert_one_line(invoke(*cmd), "layer 'fc'", "10000000x1000000", "memory budget")
    assert not (tmp_path / "w.caffemodel").exists(), line


def test_max_memory_option_sets_the_budget(tiny, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the option exports it for workers
    assert_one_line(invoke("--max-memory", "100", "build", tiny), "memory budget of 100 bytes")
    assert_one_line(invoke("--max-memory", "lots", "build", tiny), "not a memory size")


def test_dev_zero_as_a_net_is_refused_after_the_limit(monkeypatch):
    monkeypatch.setattr(limits, "MAX_TEXT_BYTES", 1 << 20)
    assert_one_line(invoke("build", "/dev/zero"), "/dev/zero", "too large")


# -- 2. outputs that are inputs -----------------------------------------------------------------

def test_init_refuses_to_overwrite_its_net(tiny):
    before = tiny.read_bytes()
    assert_one_line(invoke("init", tiny, "-o", tiny), "also an input")
    assert tiny.read_bytes() == before


def test_export_refuses_to_overwrite_its_weights(tiny, tmp_path):
    w = tmp_path / "w.caffemodel"
    assert invoke("init", tiny, "-o", w).exit_code == 0
    before = w.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(w)
    for out in (w, link, tmp_path / "sub" / ".." / "w.caffemodel"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert_one_line(invoke("export", tiny, "--weights", w, "--onnx", out), "also an input")
    assert w.read_bytes() == before


def test_forward_refuses_its_input_array_as_output(tiny, tmp_path):
    import numpy as np

    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))
    assert_one_line(invoke("forward", tiny, "--input", f"data={x}", "-o", x), "also an input")


# -- 3. Caffe's CHECKs at build time -------------------------------------------------------------

@pytest.mark.parametrize("layers, needle", [
    (('layer { name: "c" type: "Deconvolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 2 kernel_size: 3 stride: 0 } }'), "layer 'c' (Deconvolution): stride"),
    (('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 2 kernel_size: 3 stride: 0 } }'), "layer 'c' (Convolution): stride"),
    (('layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 2 kernel_size: 3 dilation: 0 } }'), "layer 'c' (Convolution): dilation"),
    ('layer { name: "r" type: "ReLU" bottom: "data" }', "layer 'r' (ReLU): takes at least 1 top"),
    ('layer { name: "d" type: "Dropout" bottom: "data" top: "x" top: "x" }', "layer 'd' (Dropout): lists top 'x'"),
    ('layer { name: "p" type: "Power" bottom: "data" top: "x" top: "y" }', "layer 'p' (Power): produces 1 top(s)"),
    ('layer { name: "e" type: "Embed" bottom: "data" top: "x" embed_param { num_output: 2 input_dim: 0 } }',
     "layer 'e' (Embed): input_dim 0"),
])
def test_caffe_checks_name_the_layer(tmp_path, layers, needle):
    p = tmp_path / "n.prototxt"
    p.write_text(input_layer((1, 3, 8, 8)) + layers)
    line = assert_one_line(invoke("build", p), needle)
    assert "division" not in line
    assert_one_line(invoke("init", p, "-o", tmp_path / "w.caffemodel"), needle)


def test_data_batch_size_zero_is_refused(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                 'data_param { source: "nowhere" batch_size: 0 } transform_param { crop_size: 3 } }')
    assert_one_line(invoke("build", p, "--phase", "TRAIN"), "layer 'd' (Data): batch_size 0")


# -- 4. no exit 3 for the user's problems ------------------------------------------------------------

@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_export_onnx_on_a_full_or_forbidden_disk_is_one_line(tiny, tmp_path, monkeypatch, err):
    from convnet_io import atomic

    real = atomic.os.replace

    def fail(src, dst):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic.os, "replace", fail)
    try:
        r = invoke("export", tiny, "--onnx", tmp_path / "m.onnx", "--no-check")
    finally:
        monkeypatch.setattr(atomic.os, "replace", real)
    assert_one_line(r, "m.onnx", os.strerror(err))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.prototxt"]


def test_forward_output_on_a_full_disk_is_one_line(tiny, tmp_path, monkeypatch):
    import numpy as np

    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np.lib.format, "write_array", full)
    r = invoke("forward", tiny, "--input", f"data={x}", "-o", tmp_path / "out.npz", "--backend", "torch")
    assert_one_line(r, "out.npz", os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.prototxt", "x.npy"]


def test_an_os_error_anywhere_is_exit_2_not_3(tiny, monkeypatch):
    import convnet_io.tools.build as tb

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/file")

    monkeypatch.setattr(tb, "summarize", denied)
    assert_one_line(invoke("build", tiny), "/some/file", os.strerror(errno.EACCES))


# -- 5. terminal escapes ----------------------------------------------------------------------------

def test_names_with_escape_sequences_are_printed_escaped(tmp_path):
    p = tmp_path / "e.prototxt"
    p.write_text('input: "d\x1b]0;pwn\x07" input_shape { dim: 1 dim: 3 }\n'
                 'layer { name: "r\x1b[31m" type: "ReLU" bottom: "d\x1b]0;pwn\x07" top: "y" }\n')
    r = invoke("build", p)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "r\\x1b[31m" in r.stdout
    p.write_text('layer { name: "x\x1b[2J" type: "Nope\x1b[31m" top: "y" }\n')
    line = assert_one_line(invoke("build", p))
    assert "\x1b" not in line and "\\x1b[2J" in line


def test_a_directory_as_net_or_output_is_one_line(tiny, tmp_path):
    assert_one_line(invoke("build", tmp_path), "is a directory")
    assert_one_line(invoke("init", tiny, "-o", tmp_path), "is a directory")


# -- 1. images: the header is checked before decoding ------------------------------------------

@pytest.fixture
def classifier(tmp_path):
    p = tmp_path / "deploy.prototxt"
    p.write_text(input_layer((1, 3, 8, 8)) + """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }""")
    w = tmp_path / "w.caffemodel"
    assert invoke("init", p, "-o", w).exit_code == 0
    return p, w


@pytest.mark.parametrize("mode", ["RGB", "I;16"])
def test_a_huge_image_is_refused_from_its_header(classifier, tmp_path, monkeypatch, mode):
    from PIL import Image

    import convnet_io.tools.preprocess as pre

    big = tmp_path / "big.png"
    Image.new(mode, (3000, 2000)).save(big)
    decoded = []
    monkeypatch.setattr(pre, "image_to_array", lambda *a, **k: decoded.append(1))
    monkeypatch.setenv("CONVNET_MAX_MEMORY", "64M")
    net, w = classifier
    line = assert_one_line(invoke("run", net, "--weights", w, "--mean-value", "0,0,0", big), "big.png", "3000 x 2000 pixels", "memory budget")
    assert not decoded, line


def test_a_bad_image_in_run_exits_2(classifier, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8not really a jpeg")
    net, w = classifier
    r = invoke("run", net, "--weights", w, "--mean-value", "0,0,0", bad)
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {bad}: "), r.output


@pytest.mark.parametrize("old, new", [
    ("stride:4 pad:0 kernel:11", "stride:4 pad:0 kernel:100000000000000000000"),
    ("stride:4 pad:0 kernel:11", "stride:4 pad:-100000000000000000000 kernel:11"),
    ("input: data 1,3,227,227", "input: data 1,3,100000000000000000000,227"),
])
def test_caffe2_listing_dimension_of_ten_to_the_20_is_one_line(tmp_path, old, new):
    text = (ROOT / "prototxt" / "alexnet_caffe2.txt").read_text()
    assert old in text
    p = tmp_path / "net_caffe2.txt"
    p.write_text(text.replace(old, new, 1))
    assert_one_line(invoke("build", p), "net_caffe2.txt:", "out of range")


# -- 7. a snapshot prefix is one trainer's --------------------------------------------------------

def _dummy_solver(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text("""
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 1 } data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }""")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\ndisplay: 0\n'
                      f'snapshot_prefix: "{tmp_path / "snap"}"\nsolver_mode: CPU\n')
    return solver


def test_two_trainers_on_one_snapshot_prefix_are_refused(tmp_path):
    from convnet_io.train.prefix_lock import PrefixLock

    solver = _dummy_solver(tmp_path)
    held = PrefixLock(str(tmp_path / "snap")).acquire()
    try:
        assert_one_line(invoke("train", "--solver", solver, "--workers", "0"), "another trainer", "snap")
    finally:
        held.release()
    r = invoke("train", "--solver", solver, "--workers", "0")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "snap_iter_2.caffemodel").exists()
    assert not (tmp_path / "snap.lock").exists()


# -- 8. init on nets with labels and HDF5 sources --------------------------------------------------

def _without_data_layers(text: str) -> str:
    """The net with its Data layers dropped (their tops become one Input layer's)."""
    out, pos = [], 0
    for m in __import__("re").finditer(r"layer\s*\{", text):
        if m.start() < pos:
            continue
        depth, j = 0, m.start()
        while True:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if text[j] == "}" and depth == 0:
                break
            j += 1
        block = text[m.start():j + 1]
        out.append(text[pos:m.start()])
        if 'type: "Data"' not in block:
            out.append(block)
        pos = j + 1
    return "".join(out) + text[pos:]


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_init_calibrates_batchnorm_with_a_label_input(tmp_path, phase):
    """BVLC's cifar10_full_sigmoid_train_test_bn with inputs for its data: calibration runs only
    what the BatchNorm layers read, so random 'labels' never reach the loss or accuracy."""
    from convnet_io.caffe.caffemodel import read_caffemodel

    text = (MODELS / "cifar10" / "cifar10_full_sigmoid_train_test_bn.prototxt").read_text()
    p = tmp_path / "bn.prototxt"
    p.write_text('layer { name: "data" type: "Input" top: "data" top: "label" input_param { '
                 'shape { dim: 8 dim: 3 dim: 32 dim: 32 } shape { dim: 8 } } }\n' + _without_data_layers(text))
    w = tmp_path / "bn.caffemodel"
    r = invoke("init", p, "-o", w, "--phase", phase)
    assert r.exit_code == 0, r.output
    assert "3 BatchNorm layers calibrated" in r.stdout
    blobs = {layer.name: layer.blobs for layer in read_caffemodel(w)}
    assert blobs["bn1"][2][0] == 1.0 and blobs["bn1"][1].min() > 0


def test_init_reads_hdf5_shapes_from_the_list_and_files(tmp_path, monkeypatch):
    import h5py
    import numpy as np

    with h5py.File(tmp_path / "part1.h5", "w") as f:
        f["data"] = np.zeros((20, 3, 8, 8), np.float32)
        f["label"] = np.zeros((20,), np.float32)
    (tmp_path / "train.txt").write_text("part1.h5\n")
    p = tmp_path / "h5.prototxt"
    p.write_text('layer { name: "d" type: "HDF5Data" top: "data" top: "label" '
                 'hdf5_data_param { source: "train.txt" batch_size: 4 } }\n'
                 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')
    monkeypatch.chdir(ROOT)  # the list is found beside the net, as Caffe's paths are tried from both
    r = invoke("init", p, "-o", tmp_path / "w.caffemodel")
    assert r.exit_code == 0, r.output
    assert "386 parameters" in r.stdout  # 2 x 192 weights + 2 biases: 3x8x8 read from the file
    (tmp_path / "train.txt").unlink()
    assert_one_line(invoke("build", p), "HDF5 shapes cannot be known")


# -- 7. outputs: the umask's mode, no temporary file left, stale ones swept -------------------------

def test_outputs_keep_the_umask_mode(tiny, tmp_path):
    from convnet_io.atomic import write_bytes_atomic

    old = os.umask(0o027)
    try:
        assert invoke("export", tiny, "--onnx", tmp_path / "m.onnx", "--no-check").exit_code == 0
        assert invoke("init", tiny, "-o", tmp_path / "w.caffemodel").exit_code == 0
        write_bytes_atomic(tmp_path / "s.solverstate", b"state")
    finally:
        os.umask(old)
    for name in ("m.onnx", "w.caffemodel", "s.solverstate"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


def test_stale_temporary_files_of_a_killed_writer_are_swept(tiny, tmp_path):
    dead = tmp_path / ".w.caffemodel.convnet-999999999-abc123.tmp"  # no such process
    alive = tmp_path / f".w.caffemodel.convnet-{os.getppid()}-abc123.tmp"  # a running writer's
    other = tmp_path / ".w.caffemodel.mine.tmp"  # not this helper's pattern: never touched
    for p in (dead, alive, other):
        p.write_bytes(b"x" * 100)
    assert invoke("init", tiny, "-o", tmp_path / "w.caffemodel").exit_code == 0
    assert not dead.exists() and alive.exists() and other.exists()


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    """A command's writes end through the normal unwinding on SIGTERM/SIGHUP: the temporary file
    is removed and the destination is untouched (only SIGKILL can leave one, swept next time)."""
    import signal
    import subprocess
    import sys

    code = f"""
import sys, time
from convnet_cli.options import handle_errors
from convnet_io.atomic import atomic_output

@handle_errors
def write():
    with atomic_output({str(tmp_path / "out.bin")!r}) as tmp:
        tmp.write_bytes(b"partial")
        print("ready", flush=True)
        time.sleep(60)
write()
"""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        assert len(list(tmp_path.iterdir())) == 1  # the temporary file, while writing
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, err
        assert "Traceback" not in err
        assert list(tmp_path.iterdir()) == []


def test_draw_refuses_to_overwrite_its_net(tiny):
    before = tiny.read_bytes()
    assert_one_line(invoke("draw", tiny, tiny), "also an input")
    assert tiny.read_bytes() == before


def test_a_long_thin_image_resizes_without_a_huge_intermediate():
    """Found by fuzzing: a 9 x 57046 GIF (736 bytes) took 4 s and ~1.4 GB in the resize, rows
    first (256 x 57046 float64 values in between). Columns first gives the same bilinear result."""
    import resource
    import time

    import numpy as np

    from convnet_io.tools.preprocess import resize_image

    rng = np.random.default_rng(0)
    small = rng.random((3, 4000, 3)).astype(np.float32)

    def reference(img, h, w):  # the separable half-pixel bilinear filter, rows then columns
        def taps(n_in, n_out):
            src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
            lo = np.floor(src).astype(int)
            return lo, np.minimum(lo + 1, n_in - 1), src - lo
        lo, hi, f = taps(img.shape[0], h)
        rows = img[lo] * (1 - f)[:, None, None] + img[hi] * f[:, None, None]
        lo, hi, f = taps(img.shape[1], w)
        return rows[:, lo] * (1 - f)[None, :, None] + rows[:, hi] * f[None, :, None]

    np.testing.assert_allclose(resize_image(small, (256, 256)), reference(small.astype(np.float64), 256, 256),
                               rtol=0, atol=1e-6)
    thin = rng.random((9, 57046, 3)).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    out = resize_image(thin, (256, 256))
    assert out.shape == (256, 256, 3) and time.process_time() - t0 < 1.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 200 * 2**20
