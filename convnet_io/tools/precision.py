"""Reduced precision for the commands: see ``convnet_io.runtimes.precision``."""
from convnet_io.runtimes.precision import (  # noqa: F401  (the commands' surface)
    PRECISIONS,
    check_precision,
    cpu_flags,
    cpu_has_bf16,
    load_calibration,
    quantize_int8,
)
