"""The calling thread's alternate signal stack (``sigaltstack``), checked and repaired (Linux).

OpenVINO's CPU plugin gives the thread that creates it a fresh alternate signal stack and, when the
plugin is destroyed, unmaps it, putting back the one it replaced only if its own is still current.
Plugins destroyed in the order they were made (one per ``ov.Core``) therefore leave the thread on an
unmapped stack. Python installs its signal handlers (SIGINT's, and any ``signal.signal`` handler,
such as torch's DataLoader SIGCHLD handler) to run on the alternate stack, so the next such signal
kills the process with SIGSEGV before any handler, faulthandler's included, can run: an xdist worker
dies silently and ``--dist loadfile`` then waits for it forever.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import sys

LINUX = sys.platform.startswith("linux")
_kept: list = []  # stacks installed here: never freed


class _StackT(ctypes.Structure):  # Linux's stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True) if LINUX else None


def current() -> tuple[int, int, int]:
    """(address, size, flags) of the calling thread's alternate signal stack; address 0: none."""
    st = _StackT()
    if _libc.sigaltstack(None, ctypes.byref(st)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")
    return st.ss_sp or 0, st.ss_size, st.ss_flags


def _mapped(address: int, size: int) -> bool:
    """Whether every page of [address, address + size) is mapped (msync says ENOMEM where not)."""
    page = mmap.PAGESIZE
    start = address - address % page
    if _libc.msync(ctypes.c_void_p(start), ctypes.c_size_t(address + size - start), 1) == 0:  # MS_ASYNC
        return True
    return ctypes.get_errno() != errno.ENOMEM


def dangling() -> str | None:
    """What is wrong with the calling thread's alternate signal stack, or None when nothing is."""
    if not LINUX:
        return None
    address, size, flags = current()
    if address == 0 or flags & 2:  # SS_DISABLE
        return None
    if not _mapped(address, size):
        return f"the thread's alternate signal stack ({size} bytes at {address:#x}) is not mapped"
    return None


def repair() -> None:
    """Give the calling thread a mapped alternate signal stack of its own (64 KiB, never freed)."""
    buf = ctypes.create_string_buffer(1 << 16)
    _kept.append(buf)
    st = _StackT(ctypes.addressof(buf), 0, len(buf))
    if _libc.sigaltstack(ctypes.byref(st), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")
