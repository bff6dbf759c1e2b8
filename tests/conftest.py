import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SHARED = ROOT.parent / "shared"
os.environ.setdefault("CONVNET_SHARED", str(SHARED))

import signal_stack  # from tests/, on the path from here on


@pytest.fixture(autouse=True)
def _signal_stack_left_mapped():
    """A test that leaves the main thread on an unmapped alternate signal stack fails here, and the
    stack is replaced: otherwise the next signal kills this (xdist worker) process silently."""
    yield
    problem = signal_stack.dangling()
    if problem:
        signal_stack.repair()
        pytest.fail(f"{problem}: the next signal handled in Python (Ctrl-C, SIGCHLD) would crash the process; "
                    "OpenVINO unmaps the stack its CPU plugin installed when the plugin is destroyed (one ov.Core "
                    "per process keeps it alive)", pytrace=False)
