"""Reduced precision for the commands: see ``convnet_io.runtimes.precision``."""
from convnet_io.runtimes.precision import (  # noqa: F401  (the commands' surface)
    INT8_ENGINES,
    PRECISIONS,
    check_precision,
    cpu_flags,
    cpu_has_bf16,
    int8_engine,
    int8_kernels,
    int8_session,
    layer_errors,
    load_calibration,
    quantize_int8,
)
