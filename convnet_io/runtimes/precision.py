"""Reduced precision, opt-in: int8 through ONNX Runtime's static quantizer with calibration inputs,
bf16 only where the CPU computes it natively.

int8: the float32 export is quantized to QDQ form (QuantizeLinear/DequantizeLinear pairs around each
convolution and inner product), activation ranges measured on the calibration inputs (MinMax):

- activations uint8 (asymmetric: after a ReLU the whole range is used), weights int8 per output
  channel, symmetric, on 7 bits (``reduce_range``). x86 CPUs without VNNI multiply u8 x s8 with
  ``vpmaddubsw``, which adds two products into a saturating int16: with 8-bit weights the sum
  overflows (255 * 127 * 2 > 32767) and ONNX Runtime's kernels return wrong sums (the digits LeNet
  lost 0.3 points and its largest probability moved by 0.4; with 7 bits none and 0.04).
- Softmax and the layers writing the net's outputs stay float32 (``kept_in_float``).
- The file is plain ONNX: any runtime reads it. convnet runs it on OpenVINO when installed: its
  low-precision transformations turn each DequantizeLinear -> Conv -> QuantizeLinear pattern into
  a u8 convolution on int8 kernels (``jit_avx2_I8`` on AVX2) and keep the rest (LRN) in float32
  between them. On AVX2 without VNNI, ONNX Runtime's int8 convolutions (QLinearConv) were measured
  at 1.2-1.4x its float32 ones, its MaxPool falls out of the blocked layout between them, and its
  LRN (45 % of AlexNet's float32 time in ONNX Runtime, 2 % in OpenVINO) stays float32: int8 on
  ONNX Runtime is no faster than float32 there (AlexNet batch 32: 1.01x). It is the fallback
  when OpenVINO is absent or would compute a layer differently from Caffe (``openvino_blocker``).

The cost in accuracy is the caller's to measure (``layer_errors`` per blob; the bench's held-out
digits accuracy and top-1 agreement).

bf16: x86 CPUs compute bfloat16 natively only with AVX512-BF16 or AMX; elsewhere it is emulated and
slower than float32, so convnet refuses it there instead of running a slower, less exact model.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from convnet_io.errors import ConvnetError

PRECISIONS = ("fp32", "bf16", "int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    return bool(cpu_flags() & set(BF16_FLAGS))


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConvnetError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and not cpu_has_bf16():
        raise ConvnetError("bf16 needs a CPU with AVX512-BF16 or AMX (neither is in /proc/cpuinfo's flags): "
                           "it would be emulated, slower than fp32; use fp32 or int8")


def load_calibration(path: str | Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """Calibration inputs: a ``.npy`` array N x C x H x W of preprocessed inputs (as the net is fed)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConvnetError(f"{path}: cannot read calibration inputs (a .npy array): {e}") from None
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != len(input_shape) or tuple(data.shape[1:]) != tuple(input_shape[1:]):
        raise ConvnetError(f"{path}: calibration inputs of shape {list(data.shape)} do not fit the net's input "
                           f"{['N', *input_shape[1:]]}")
    if len(data) == 0:
        raise ConvnetError(f"{path}: no calibration inputs")
    return data


def kept_in_float(model_path: str | Path) -> list[str]:
    """Nodes the quantizer leaves alone: every Softmax, every node that writes a net output, and
    the convolution or inner product a Softmax reads (the classifier). Quantized, a Softmax reads
    its logits and writes its probabilities on 256 levels: among 1,000 classes the top ones then
    tie or swap (AlexNet with seeded weights: top-1 agreement 44-49 % on crops of the sample
    images; with these in float32, 88-92 %, at the same speed — the classifier is 1 % of the work)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    producer = {t: n for n in graph.node for t in n.output}
    kept = [n for n in graph.node if n.op_type == "Softmax" or outputs & set(n.output)]
    kept += [producer[t] for n in kept if n.op_type == "Softmax" for t in n.input[:1]
             if t in producer and producer[t].op_type in ("Conv", "Gemm", "MatMul")]
    return list(dict.fromkeys(n.name for n in kept if n.name))


def quantize_int8(model_path: str | Path, out_path: str | Path, input_name: str, calibration: np.ndarray,
                  batch: int = 8) -> None:
    """``model_path`` (float32 ONNX) quantized to int8 QDQ at ``out_path``, calibrated on ``calibration``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, arrays: Iterable[np.ndarray]):
            self._it = iter(arrays)

        def get_next(self):
            nxt = next(self._it, None)
            return None if nxt is None else {input_name: nxt}

    chunks = [calibration[i:i + batch] for i in range(0, len(calibration), batch)]
    with tempfile.TemporaryDirectory(prefix="convnet-quant-") as tmp:
        # the quantizer writes temporary models (and its augmented calibration model) beside its output
        staged = Path(tmp) / "int8.onnx"
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
        try:
            # ONNX Runtime's basic graph optimizations first: a BatchNorm + Scale after a convolution
            # (ResNet-50) folds into its weights, so the convolution's output is the ReLU's input
            # and quantizes with it; unfolded, each conv ran int8 between float32 BatchNormalization,
            # Mul and Add, slower than float32 throughout (OpenVINO, ResNet-50 batch 32: 1.1x fp32's time)
            from onnxruntime.quantization.shape_inference import quant_pre_process

            folded = Path(tmp) / "folded.onnx"
            quant_pre_process(str(model_path), str(folded), skip_symbolic_shape=True)
            quantize_static(str(folded), str(staged), Reader(chunks), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=kept_in_float(folded),
                            extra_options={"WeightSymmetric": True})
        finally:
            root.setLevel(level)
        from convnet_io.atomic import write_bytes_atomic

        write_bytes_atomic(out_path, staged.read_bytes())


INT8_ENGINES = ("openvino", "onnxruntime")


def int8_engine(graph=None, device: str = "auto") -> str:
    """The engine convnet runs an int8 model on: OpenVINO (CPU) where it is installed and computes
    every layer of ``graph`` as Caffe does, else (and for CUDA) ONNX Runtime."""
    from convnet_io.runtimes.openvino_session import (
        openvino_available,
        openvino_blocker,
    )

    if device != "cuda" and openvino_available() and (graph is None or openvino_blocker(graph) is None):
        return "openvino"
    return "onnxruntime"


def int8_session(model: bytes | str, graph=None, device: str = "auto", engine: str | None = None):
    """A session (ONNX Runtime's surface) running the int8 QDQ ``model`` (bytes or path) on
    ``engine`` (default: ``int8_engine(graph)``)."""
    engine = engine or int8_engine(graph, device)
    if engine not in INT8_ENGINES:
        raise ConvnetError(f"int8 runs on {' or '.join(INT8_ENGINES)}, not {engine!r}")
    if engine == "openvino":
        from convnet_io.runtimes.openvino_session import OpenVinoSession

        # f32 is the precision of what is not quantized (LRN, Softmax); the QDQ pairs decide the rest
        return OpenVinoSession(model, device, precision="f32")
    from convnet_io.runtimes.onnxruntime_session import make_session

    return make_session(model, device)


def int8_kernels(session) -> dict[str, str]:
    """For an OpenVINO session: each convolution and inner product of the compiled model with the
    precision it executes in and its kernel (``conv1: u8 jit_avx2_I8``), from
    ``get_runtime_model()``; empty for other sessions (ONNX Runtime does not say)."""
    compiled = getattr(session, "compiled", None)
    if compiled is None:
        return {}
    out = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str)
        if kind in ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"):
            first = rt["originalLayersNames"].astype(str).split(",")[0]
            out[first.split("/")[0]] = f"{rt['runtimePrecision'].astype(str)} {rt['primitiveType'].astype(str)}"
    return out


def layer_errors(fp32_model: str | Path, int8_model: str | Path, feeds: dict[str, np.ndarray],
                 blobs: Iterable[str]) -> dict[str, float]:
    """The cost in accuracy per blob: max |int8 - fp32| / max |fp32| of each named blob, both
    models run in ONNX Runtime with the blobs as extra outputs (in the QDQ model a blob is the
    output of its DequantizeLinear, the value the next layer reads)."""
    import onnx

    from convnet_io.runtimes.onnxruntime_session import make_session

    blobs = list(blobs)
    runs = []
    for path in (fp32_model, int8_model):
        model = onnx.load(str(path))
        produced = {t for n in model.graph.node for t in n.output}
        # the quantizer folds a ReLU into the QuantizeLinear after the convolution: the blob the
        # next layer reads is the DequantizeLinear's output, the tensor with the blob's name is
        # the convolution's unclamped one
        names = {b: f"{b}_DequantizeLinear_Output" if f"{b}_DequantizeLinear_Output" in produced else b
                 for b in blobs if b in produced}
        known = {o.name for o in model.graph.output}
        for t in names.values():
            if t not in known:
                model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        session = make_session(model.SerializeToString(), "cpu", prepack=False)
        runs.append(dict(zip(names, session.run(list(names.values()), feeds))))
    fp, q = runs
    out = {}
    for b in blobs:
        if b in fp and b in q:
            scale = float(np.abs(fp[b]).max()) or 1.0
            out[b] = float(np.abs(q[b].astype(np.float64) - fp[b]).max() / scale)
    return out
