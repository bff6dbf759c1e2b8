"""Mutation fuzzing of every reader: seeds, mutators and one target per reader.

A target takes bytes and must either succeed or raise ConvnetError (which the CLI prints as one
line with exit 2). Any other exception is what the CLI would report as exit 3, so it is a
failure; so is a case slower than ``HANG_S``. ``run_target`` drives a target over seeded mutations
of its seeds, reproducibly (case ``i`` of a target is the same on every machine); ``make test``
runs a few cases per target (tests/test_fuzz.py), ``make fuzz`` 10,000 (tools/fuzz.py)."""
from __future__ import annotations

import io
import os
import random
import re
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("CONVNET_SHARED", ROOT.parent / "shared")) / "caffe-models"
HANG_S = 10

# -- seeds ------------------------------------------------------------------------------------


def _text_files(*patterns: str) -> list[bytes]:
    out = []
    for base in (MODELS, ROOT / "prototxt"):
        for pattern in patterns:
            out += [p.read_bytes() for p in sorted(base.rglob(pattern)) if p.stat().st_size < 200_000]
    return out


@cache
def net_seeds() -> tuple[bytes, ...]:
    nets = [s for s in _text_files("*.prototxt") if b"layer" in s]
    nets += [s for s in _text_files("*.txt") if b"op {" in s or b"layer" in s]
    return tuple(nets)


@cache
def listing_seeds() -> tuple[bytes, ...]:
    return tuple(p.read_bytes() for p in sorted((ROOT / "prototxt").glob("*_caffe2.txt")))


@cache
def solver_seeds() -> tuple[bytes, ...]:
    return tuple(s for s in _text_files("*solver*.prototxt"))


def _small_blobs():
    rng = np.random.default_rng(0)
    return [("conv1", "Convolution", [rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                                      rng.standard_normal(4).astype(np.float32)]),
            ("ip1", "InnerProduct", [rng.standard_normal((2, 16)).astype(np.float32)])]


@cache
def caffemodel_seeds() -> tuple[bytes, ...]:
    from convnet_io.caffe.caffemodel import write_caffemodel
    from convnet_io.caffe.caffemodel.reader import LayerBlobs

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "w.caffemodel"
        write_caffemodel(p, [LayerBlobs(n, t, b) for n, t, b in _small_blobs()])
        return (p.read_bytes(),)


@cache
def binaryproto_seeds() -> tuple[bytes, ...]:
    from convnet_io.caffe.caffemodel import write_blobproto
    from convnet_io.caffe.proto import caffe_pb2

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.binaryproto"
        write_blobproto(p, np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4))
        legacy = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2, data=[float(i) for i in range(12)])
        double = caffe_pb2.BlobProto(double_data=[1.0, 2.0])
        double.shape.dim.extend([2])
        return (p.read_bytes(), legacy.SerializeToString(), double.SerializeToString())


@cache
def solverstate_seeds() -> tuple[bytes, ...]:
    from convnet_io.caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState(iter=100, learned_net="net_iter_100.caffemodel", current_step=2)
    h = state.history.add()
    h.shape.dim.extend([2, 3])
    h.data.extend([0.5] * 6)
    return (state.SerializeToString(),)


def _image_bytes(fmt: str, mode: str, size=(12, 9)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(len(fmt) + len(mode))
    bands = {"RGB": 3, "L": 1, "RGBA": 4}.get(mode, 1)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        arr = rng.integers(0, 255, (size[1], size[0], bands), dtype=np.uint8)
        img = Image.fromarray(arr[:, :, 0] if bands == 1 else arr, mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@cache
def image_seeds() -> tuple[bytes, ...]:
    seeds = [_image_bytes("PNG", "RGB"), _image_bytes("PNG", "L"), _image_bytes("PNG", "RGBA"),
             _image_bytes("PNG", "I;16"), _image_bytes("JPEG", "RGB"), _image_bytes("BMP", "RGB"),
             _image_bytes("GIF", "L"), _image_bytes("TIFF", "RGB")]
    return tuple(seeds)


@cache
def datum_seeds() -> tuple[bytes, ...]:
    from convnet_io.data.datum import array_to_datum, encoded_datum

    raw = array_to_datum(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), label=3)
    flt = array_to_datum(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 2, 2), label=1)
    enc = encoded_datum(_image_bytes("PNG", "RGB"), label=7)
    return tuple(d.SerializeToString() for d in (raw, flt, enc))


# -- mutators -----------------------------------------------------------------------------------

_NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
_ODD_NUMBERS = [b"0", b"-1", b"-2147483649", b"2147483648", b"4294967296", b"99999999999999999999",
                b"100000000000000000000", b"1e308", b"-1e308", b"nan", b"inf", b"-inf", b"0.0", b"1e-45",
                b"3.5", b"0x10", b"010", b"1000000"]
_ODD_TEXT = [b"\x1b[31m", b"\x1b]0;title\x07", b"\x00", b"\xff\xfe", b"\xe2\x80\xae", b"\\", b'"', b"'", b"{",
             b"}", b"#", b"\n", b"layer {", b"bottom: \"data\"", b"top: \"data\"", b": :", b"<", b">", b"[", b"]"]


def _flip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data) + 1)]


def _insert(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    piece = rng.choice(_ODD_TEXT) if rng.random() < 0.6 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return data[:i] + piece + data[i:]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)


def _delete_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def _odd_number(rng: random.Random, data: bytes) -> bytes:
    spots = list(_NUMBER.finditer(data))
    if not spots:
        return _insert(rng, data)
    for m in rng.sample(spots, min(len(spots), rng.randint(1, 3))):
        data = data[:m.start()] + rng.choice(_ODD_NUMBERS) + data[m.end():]
        break  # offsets after the first edit have moved
    return data


def _blocks(data: bytes) -> list[tuple[int, int]]:
    """Spans of top-level ``layer { ... }`` / ``layers { ... }`` / ``op { ... }`` blocks."""
    out, depth, start = [], 0, None
    for m in re.finditer(rb"[{}]|\b(?:layers?|op)\s*\{", data):
        tok = m.group()
        if tok.endswith(b"{"):
            if depth == 0 and tok != b"{":
                start = m.start()
            depth += 1
        else:
            depth -= 1
            if depth == 0 and start is not None:
                out.append((start, m.end()))
                start = None
            depth = max(depth, 0)
    return out


def _reorder_blocks(rng: random.Random, data: bytes) -> bytes:
    blocks = _blocks(data)
    if len(blocks) < 2:
        return _flip(rng, data)
    (a0, a1), (b0, b1) = sorted(rng.sample(blocks, 2))
    return data[:a0] + data[b0:b1] + data[a1:b0] + data[a0:a1] + data[b1:]


def _duplicate_block(rng: random.Random, data: bytes) -> bytes:
    blocks = _blocks(data)
    if not blocks:
        return _duplicate_line(rng, data)
    a, b = rng.choice(blocks)
    at = rng.choice(blocks)[1]
    return data[:at] + b"\n" + data[a:b] + data[at:]


def _remove_brace(rng: random.Random, data: bytes) -> bytes:
    spots = [m.start() for m in re.finditer(rb"[{}]", data)]
    if not spots:
        return _truncate(rng, data)
    i = rng.choice(spots)
    return data[:i] + data[i + 1:]


def _huge_varint(rng: random.Random, data: bytes) -> bytes:
    """A length or value field made enormous (0xff... varint) or negative."""
    i = rng.randrange(len(data) + 1)
    piece = rng.choice([b"\xff" * 9 + b"\x01", b"\xff\xff\xff\xff\x0f", b"\x80" * 10, b"\xfe\xff\xff\xff\x07"])
    return data[:i] + piece + data[i + rng.choice([0, 1, 2]):]


def _splice(rng: random.Random, data: bytes, other: bytes) -> bytes:
    i, j = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
    return data[:i] + other[j:]


TEXT_MUTATORS = [_flip, _truncate, _insert, _duplicate_line, _delete_line, _odd_number, _odd_number,
                 _reorder_blocks, _duplicate_block, _remove_brace]
BINARY_MUTATORS = [_flip, _flip, _truncate, _insert, _huge_varint, _huge_varint]


def mutate(rng: random.Random, seeds: tuple[bytes, ...], mutators) -> bytes:
    data = rng.choice(seeds)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if rng.random() < 0.05:
            data = _splice(rng, data, rng.choice(seeds))
        else:
            data = rng.choice(mutators)(rng, data) if data else rng.choice(seeds)
    return data


# -- targets ------------------------------------------------------------------------------------

_SCRATCH = Path(tempfile.gettempdir()) / f"convnet-fuzz-{os.getpid()}"


def _file(data: bytes, name: str) -> Path:
    _SCRATCH.mkdir(exist_ok=True)
    p = _SCRATCH / name
    p.write_bytes(data)
    return p


def target_prototxt(data: bytes) -> None:
    """Text -> parse, upgrade, phase filter, shapes (both phases), summary; the fast parser must
    agree with protobuf's wherever it answers."""
    from google.protobuf import text_format

    from convnet_io.api import load_graph
    from convnet_io.caffe.proto import caffe_pb2
    from convnet_io.caffe.prototxt_fast import parse_fast
    from convnet_io.graph.summary import format_table, summarize

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        fast = parse_fast(text, caffe_pb2.NetParameter())
        if fast is not None:
            slow = caffe_pb2.NetParameter()
            text_format.Parse(text, slow)  # must not raise where the fast path accepted
            assert fast.SerializeToString() == slow.SerializeToString(), "fast parser disagrees with protobuf"
    path = _file(data, "net.prototxt")
    for phase in ("TEST", "TRAIN"):
        graph = load_graph(path, phase=phase)
        format_table(summarize(graph))


def target_caffe2_listing(data: bytes) -> None:
    from convnet_io.api import load_graph

    load_graph(_file(data, "net_caffe2.txt"))


def target_solver(data: bytes) -> None:
    from convnet_io.train.config import read_solver

    read_solver(_file(data, "solver.prototxt"))


def target_caffemodel(data: bytes) -> None:
    from convnet_io.caffe.caffemodel import read_caffemodel

    read_caffemodel(_file(data, "w.caffemodel"))


def target_binaryproto(data: bytes) -> None:
    from convnet_io.caffe.caffemodel import read_blobproto

    read_blobproto(_file(data, "mean.binaryproto"))


def target_solverstate(data: bytes) -> None:
    from convnet_io.train.snapshot import read_solverstate

    read_solverstate(_file(data, "s.solverstate"))


def target_datum(data: bytes) -> None:
    from convnet_io.data.datum import read_datum

    for mode in ("native", "gray"):
        read_datum(data, "fuzz", mode)


def target_image(data: bytes) -> None:
    from convnet_io.data.image import decode_image
    from convnet_io.tools.preprocess import load_image, preprocess

    decode_image(data, "native", "fuzz")
    arr = load_image(_file(data, "img.png"))
    preprocess(arr, (8, 8), None)


_SHAPE_TYPES = ["Convolution", "Deconvolution", "Pooling", "InnerProduct", "ReLU", "LRN", "Concat", "Eltwise",
                "Reshape", "Flatten", "Slice", "Softmax", "BatchNorm", "Scale", "Crop", "Dropout", "Power", "Split",
                "Tile", "Reduction", "ArgMax", "Embed", "Bias", "PReLU", "MVN", "Permute", "Normalize", "Upsample"]
_SHAPE_PARAMS = {
    "Convolution": "convolution_param", "Deconvolution": "convolution_param", "Pooling": "pooling_param",
    "InnerProduct": "inner_product_param", "LRN": "lrn_param", "Concat": "concat_param", "Reshape": "reshape_param",
    "Slice": "slice_param", "Crop": "crop_param", "Tile": "tile_param", "Reduction": "reduction_param",
    "ArgMax": "argmax_param", "Embed": "embed_param", "Flatten": "flatten_param", "Softmax": "softmax_param",
}
_FIELDS = ["num_output: {n}", "kernel_size: {n}", "stride: {n}", "pad: {n}", "dilation: {n}", "group: {n}",
           "axis: {n}", "kernel_h: {n}", "stride_w: {n}", "local_size: {n}", "slice_point: {n}", "tiles: {n}",
           "offset: {n}", "top_k: {n}", "input_dim: {n}", "end_axis: {n}", "num_axes: {n}",
           "shape {{ dim: {n} dim: {n} }}", "pool: MAX", "pool: AVE", "global_pooling: true"]


def shape_case(rng: random.Random) -> bytes:
    """A random chain of layers with random parameters over a random input: shape inference."""
    dims = " ".join(f"dim: {rng.choice([1, 2, 3, 5, 8, 16, 0, -1, 2**31 - 1])}"
                    for _ in range(rng.choice([1, 2, 3, 4, 4, 4, 5])))
    text = [f'layer {{ name: "in" type: "Input" top: "x0" input_param {{ shape {{ {dims} }} }} }}']
    for i in range(1, rng.randint(2, 6)):
        t = rng.choice(_SHAPE_TYPES)
        bottoms = " ".join(f'bottom: "x{rng.randrange(i)}"' for _ in range(rng.choice([1, 1, 1, 2])))
        tops = " ".join(f'top: "x{i}{"" if k == 0 else "_" + str(k)}"' for k in range(rng.choice([1, 1, 1, 2])))
        fields = " ".join(rng.choice(_FIELDS).format(n=rng.choice([0, 1, 2, 3, -1, 7, 1000000, 2**31 - 1]))
                          for _ in range(rng.randint(0, 4)))
        param = _SHAPE_PARAMS.get(t)
        body = f"{param} {{ {fields} }}" if param and fields else ""
        text.append(f'layer {{ name: "l{i}" type: "{t}" {bottoms} {tops} {body} }}')
    return "\n".join(text).encode()


def target_shapes(data: bytes) -> None:
    target_prototxt(data)


@dataclass
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], tuple[bytes, ...]]
    mutators: list = field(default_factory=lambda: TEXT_MUTATORS)
    generate: Callable[[random.Random], bytes] | None = None


TARGETS = [
    Target("prototxt", target_prototxt, net_seeds),
    Target("caffe2_listing", target_caffe2_listing, listing_seeds),
    Target("solver", target_solver, solver_seeds),
    Target("shapes", target_shapes, lambda: (), generate=shape_case),
    Target("caffemodel", target_caffemodel, caffemodel_seeds, BINARY_MUTATORS),
    Target("binaryproto", target_binaryproto, binaryproto_seeds, BINARY_MUTATORS),
    Target("solverstate", target_solverstate, solverstate_seeds, BINARY_MUTATORS),
    Target("datum", target_datum, datum_seeds, BINARY_MUTATORS),
    Target("image", target_image, image_seeds, BINARY_MUTATORS),
]
TARGETS_BY_NAME = {t.name: t for t in TARGETS}


# -- driver -------------------------------------------------------------------------------------

class Hang(Exception):
    pass


_case_cpu = [0.0]
_armed = [False]  # a case is running: only then may a timer signal raise (or re-arm)


def _disarm() -> None:
    _armed[0] = False
    signal.alarm(0)
    signal.setitimer(signal.ITIMER_PROF, 0)


def _alarm(signum, frame):
    # A signal handled after the case ended must do nothing: re-arming the alarm then would leave
    # one pending with its default action (terminate) once the handlers are restored.
    if not _armed[0]:
        return
    if signum == signal.SIGPROF:
        _disarm()
        raise Hang(f"over {HANG_S} s of CPU")
    if time.process_time() - _case_cpu[0] > 1.0:  # computing, only slowly on a busy machine:
        signal.alarm(12 * HANG_S)                  # the CPU timer judges it
        return
    _disarm()
    raise Hang(f"blocked over {12 * HANG_S} s")


@dataclass
class Failure:
    case: int
    kind: str
    message: str
    data: bytes


@dataclass
class Report:
    name: str
    cases: int = 0
    refused: int = 0
    failures: list[Failure] = field(default_factory=list)
    slowest_s: float = 0.0  # wall time
    slowest_cpu_s: float = 0.0  # CPU time: what the 10 s hang limit is about on a shared machine


def case_input(target: Target, seed: int, i: int) -> bytes:
    rng = random.Random(f"{target.name}:{seed}:{i}")
    if target.generate is not None:
        return target.generate(rng)
    return mutate(rng, target.seeds(), target.mutators)


def check_case(target: Target, data: bytes) -> tuple[str, str] | None:
    """None when the target succeeded or refused with ConvnetError; else (kind, message)."""
    from convnet_io.errors import ConvnetError

    # A hang is HANG_S of CPU time (the machine may be shared: wall time says little), or a case
    # blocked for a dozen times that long.
    old = signal.signal(signal.SIGALRM, _alarm), signal.signal(signal.SIGPROF, _alarm)
    _case_cpu[0] = time.process_time()
    _armed[0] = True
    signal.setitimer(signal.ITIMER_PROF, HANG_S)
    signal.alarm(12 * HANG_S)
    try:
        target.run(data)
    except ConvnetError:
        return None
    except Hang as e:
        return "hang", str(e)
    except Exception as e:  # noqa: BLE001
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "convnet_io" in f.filename),
                     "?")
        return type(e).__name__, f"{where}: {e}"[:300]
    finally:
        _disarm()
        signal.signal(signal.SIGALRM, old[0])
        signal.signal(signal.SIGPROF, old[1])
    return None


def run_target(target: Target, cases: int, seed: int = 0, start: int = 0, on_progress=None) -> Report:
    report = Report(target.name)
    for i in range(start, start + cases):
        if on_progress is not None and i % 100 == 0:
            on_progress(report)
        data = case_input(target, seed, i)
        t0, c0 = time.perf_counter(), time.process_time()
        bad = check_case(target, data)
        report.slowest_s = max(report.slowest_s, time.perf_counter() - t0)
        report.slowest_cpu_s = max(report.slowest_cpu_s, time.process_time() - c0)
        report.cases += 1
        if bad:
            report.failures.append(Failure(i, bad[0], bad[1], data))
    return report
