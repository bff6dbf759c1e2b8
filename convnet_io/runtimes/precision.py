"""Reduced precision, opt-in: int8 through ONNX Runtime's static quantizer with calibration inputs,
bf16 only where the CPU computes it natively.

int8: the float32 export is quantized to QDQ form (per-channel int8 weights, int8 activations with
ranges measured on the calibration inputs: MinMax over every value), so ONNX Runtime runs the
convolutions and inner products on int8 kernels. The cost in accuracy is the caller's to measure
(``convnet diff`` on the outputs; the bench's held-out digits accuracy).

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
            quantize_static(str(model_path), str(staged), Reader(chunks), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        finally:
            root.setLevel(level)
        from convnet_io.atomic import write_bytes_atomic

        write_bytes_atomic(out_path, staged.read_bytes())
