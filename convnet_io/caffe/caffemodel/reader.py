"""Reading ``.caffemodel`` and ``.binaryproto`` files: the wire format scanned over an mmap, each blob's
payload read straight into its final array (the package docstring has the whole design)."""
import math
import mmap
import os
import stat
import sys
from dataclasses import dataclass, field

import numpy as np

from convnet_io.caffe.caffemodel.wire import (
    _BLOB_DATA,
    _BLOB_DIFF,
    _BLOB_DOUBLE_DATA,
    _BLOB_DOUBLE_DIFF,
    _BLOB_NUM,
    _BLOB_SHAPE,
    _BLOB_WIDTH,
    _F32,
    _F64,
    _I32,
    _I64,
    _LEN,
    _NET_LAYER,
    _NET_LAYERS,
    _SHAPE_DIM,
    _V0_BLOBS,
    _V0_NAME,
    _V0_TYPE,
    _V1_BLOBS,
    _V1_NAME,
    _V1_TYPE,
    _V1_V0LAYER,
    _V2_BLOBS,
    _V2_NAME,
    _V2_TYPE,
    _VARINT,
    _fixed_run,
    _int32,
    _next_field,
    _packed_varints,
    _WireError,
)
from convnet_io.errors import ConvnetError


@dataclass
class LayerBlobs:
    """The weights of one layer: its name, its V2 type string and its blobs in order."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


def _type_tables() -> tuple[dict[int, str], dict[str, str]]:
    """V1 enum values and V0 type strings -> V2 type strings, from the upgrade module's tables
    (Caffe's UpgradeV0LayerType and UpgradeV1LayerType), so both readers agree."""
    from convnet_io.caffe.proto import caffe_pb2
    from convnet_io.caffe.upgrade import V0_TO_V1_TYPE, V1_TO_V2_TYPE

    v1 = {value: V1_TO_V2_TYPE.get(name, "") for name, value in
          caffe_pb2.V1LayerParameter.LayerType.items()}
    v0 = {old: V1_TO_V2_TYPE[name] for old, name in V0_TO_V1_TYPE.items() if name in V1_TO_V2_TYPE}
    return v1, v0


# V1LayerParameter.LayerType value -> V2 type string; V0LayerParameter.type -> V2 type string.
V1_LAYER_TYPES, V0_LAYER_TYPES = _type_tables()

class _BlobError(Exception):
    """A well-formed blob that is inconsistent (shape vs. element count, negative dims)."""


class _EmptyBlob(_BlobError):
    """A BlobProto without a single blob field."""


class _BlobPlan:
    """A checked BlobProto whose values are not read yet.

    ``chunks`` are its values in file order: ``(offset, count)`` for a packed
    payload of ``count`` little-endian ``wire`` values at byte ``offset`` of the
    file (not touched while scanning), or an array already decoded from the
    rare non-packed encoding.  ``count`` is their total, checked against ``shape``.
    """

    __slots__ = ("shape", "dtype", "wire", "count", "chunks")

    def __init__(self, shape: tuple[int, ...], dtype: type, wire: np.dtype, count: int,
                 chunks: list[tuple[int, int] | np.ndarray]):
        self.shape, self.dtype, self.wire, self.count, self.chunks = (
            shape, dtype, wire, count, chunks)


def _run_values(buf, pos: int, n: int, width: int, wire: np.dtype) -> np.ndarray:
    """The ``n`` values of a run of non-packed ``tag byte + width-byte value`` records."""
    rec = 1 + width
    recs = np.frombuffer(buf[pos:pos + n * rec], np.uint8).reshape(n, rec)  # a copy: no export
    return recs[:, 1:].copy().view(wire).reshape(n)


def _scan_blob(buf, pos: int, end: int) -> _BlobPlan:
    """Scan the BlobProto at ``buf[pos:end]``: its shape and where its values lie.

    Packed payloads are only located (by length), never read, so an ``mmap``
    ``buf`` keeps their pages untouched; nothing here holds a buffer export of
    ``buf`` (slices of an ``mmap`` are ``bytes`` copies), so it can be closed.
    """
    legacy: list[int | None] = [None, None, None, None]
    dims: list[int] = []
    has_shape = False
    f32: list[tuple[int, int] | np.ndarray] = []
    f64: list[tuple[int, int] | np.ndarray] = []
    seen = False
    while pos < end:
        tag_pos = pos
        number, wt, a, b, pos = _next_field(buf, pos, end)
        if number == _BLOB_DATA:
            if wt == _LEN:
                if (b - a) % 4:
                    raise _WireError(f"packed float data of {b - a} bytes is not a multiple of 4",
                                     tag_pos)
                f32.append((a, (b - a) // 4))
                seen = True
            elif wt == _I32:
                n = _fixed_run(buf, tag_pos, end, (_BLOB_DATA << 3) | _I32, 4)
                if n:
                    f32.append(_run_values(buf, tag_pos, n, 4, _F32))
                    pos = tag_pos + n * 5
                else:  # a non-minimal tag encoding: take this one value alone
                    f32.append((a, 1))
                seen = True
        elif number == _BLOB_DOUBLE_DATA:
            if wt == _LEN:
                if (b - a) % 8:
                    raise _WireError(
                        f"packed double data of {b - a} bytes is not a multiple of 8", tag_pos)
                f64.append((a, (b - a) // 8))
                seen = True
            elif wt == _I64:
                n = _fixed_run(buf, tag_pos, end, (_BLOB_DOUBLE_DATA << 3) | _I64, 8)
                if n:
                    f64.append(_run_values(buf, tag_pos, n, 8, _F64))
                    pos = tag_pos + n * 9
                else:
                    f64.append((a, 1))
                seen = True
        elif number == _BLOB_SHAPE and wt == _LEN:
            has_shape = seen = True
            p = a
            while p < b:
                n2, wt2, a2, b2, p = _next_field(buf, p, b)
                if n2 == _SHAPE_DIM:
                    if wt2 == _LEN:
                        _packed_varints(buf, a2, b2, dims)
                    elif wt2 == _VARINT:
                        dims.append(a2 - (1 << 64) if a2 >= 1 << 63 else a2)
        elif _BLOB_NUM <= number <= _BLOB_WIDTH and wt == _VARINT:
            legacy[number - 1] = _int32(a)
            seen = True
        elif number in (_BLOB_DIFF, _BLOB_DOUBLE_DIFF):
            seen = True

    if not seen:
        raise _EmptyBlob("holds no shape and no data")
    if any(v is not None for v in legacy):
        # Caffe: any legacy dimension set means a 4-D (num, channels, height, width) blob.
        shape = tuple(1 if v is None else v for v in legacy)
    elif has_shape:
        shape = tuple(dims)
    else:
        shape = ()  # Caffe: no shape at all is a blob of 0 axes (one element)
    if any(d < 0 for d in shape):
        raise _BlobError(f"negative dimension in shape {_fmt_shape(shape)}")

    chunks = f64 or f32  # Caffe reads double_data whenever it is non-empty
    if len(chunks) == 1 and type(chunks[0]) is tuple:  # the usual case: one packed payload
        total = chunks[0][1]
    else:
        total = sum(c[1] if type(c) is tuple else c.size for c in chunks)
    count = math.prod(shape)
    if total != count:
        what = "double_data" if f64 else "data"
        raise _BlobError(f"{total} values in {what} but shape {_fmt_shape(shape)} "
                         f"holds {count}")
    if f64:
        return _BlobPlan(shape, np.float64, _F64, total, f64)
    return _BlobPlan(shape, np.float32, _F32, total, f32)


def _fill_from_buffer(plan: _BlobPlan, buf) -> np.ndarray:
    """The plan's array, its packed values copied (once) out of ``buf``."""
    flat = np.empty(plan.count, plan.dtype)
    i = 0
    for c in plan.chunks:
        if type(c) is tuple:
            offset, n = c
            flat[i:i + n] = np.frombuffer(buf, plan.wire, count=n, offset=offset)
        else:
            n = c.size
            flat[i:i + n] = c
        i += n
    return flat.reshape(plan.shape)


_SWAP = sys.byteorder != "little"  # the file's values are little-endian
_PREADV = hasattr(os, "preadv")  # one system call per payload instead of seek + read


class _ShortRead(Exception):
    """The file ended before a payload its structure located (it shrank while being read)."""


def _readinto_at(f, offset: int, out: memoryview) -> None:
    """Fill ``out`` with the file's bytes from ``offset`` (a read may return short)."""
    got, want = 0, len(out)
    if _PREADV:
        fd = f.fileno()
        while got < want:
            n = os.preadv(fd, [out[got:]], offset + got)
            if not n:
                break
            got += n
    else:
        f.seek(offset)
        while got < want:
            n = f.readinto(out[got:])
            if not n:
                break
            got += n
    if got < want:
        raise _ShortRead(f"expected {want} bytes at byte {offset}, the file ended after {got}")


def _fill_from_file(plan: _BlobPlan, f) -> np.ndarray:
    """The plan's array, its packed values read by the kernel straight into it."""
    chunks = plan.chunks
    if len(chunks) == 1 and type(chunks[0]) is tuple:  # the usual case: one packed payload
        offset, n = chunks[0]
        flat = np.empty(n, plan.dtype)
        if n:
            out = memoryview(flat).cast("B")
            if not _PREADV or os.preadv(f.fileno(), (out,), offset) != len(out):
                _readinto_at(f, offset, out)  # the general way, for short reads too
            if _SWAP:
                flat.byteswap(inplace=True)
        return flat.reshape(plan.shape)
    flat = np.empty(plan.count, plan.dtype)
    i = 0
    for c in plan.chunks:
        if type(c) is tuple:
            offset, n = c
            if n:
                seg = flat[i:i + n]
                _readinto_at(f, offset, memoryview(seg).cast("B"))
                if _SWAP:
                    seg.byteswap(inplace=True)
        else:
            n = c.size
            flat[i:i + n] = c
        i += n
    return flat.reshape(plan.shape)


def _decode_blob(buf: bytes, pos: int, end: int) -> np.ndarray:
    """Decode the BlobProto at ``buf[pos:end]``."""
    return _fill_from_buffer(_scan_blob(buf, pos, end), buf)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConvnetError(f"{path}: is a directory, not a weights file") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None


def _open_mapped(path: str | os.PathLike):
    """Open ``path`` for :func:`read_caffemodel`: (unbuffered file, its bytes as ``buf``).

    ``buf`` is a read-only ``mmap`` of a non-empty regular file, so scanning the
    structure only pages in what it touches; where mapping is impossible (an
    empty or special file, a file system without ``mmap``) it is the whole file
    read into ``bytes``, as :func:`_read_bytes` does.  The caller closes both.
    """
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConvnetError(f"{path}: is a directory, not a weights file") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                try:
                    return f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):
                    pass  # e.g. a file system that cannot map files: read it instead
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            return f, f.readall()
        except IsADirectoryError:
            raise ConvnetError(f"{path}: is a directory, not a weights file") from None
        except OSError as e:
            raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    except BaseException:
        f.close()
        raise


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@dataclass
class _LayerSpans:
    """Where one layer's pieces lie in the file, before the blobs are decoded."""

    index: int
    name: str | None = None
    type: str = ""
    blobs: list[tuple[int, int]] = field(default_factory=list)
    v0: bool = False  # name/type/blobs came from a nested V0LayerParameter


def _scan_v2(buf: bytes, a: int, b: int, spans: _LayerSpans) -> None:
    pos = a
    while pos < b:
        number, wt, x, y, pos = _next_field(buf, pos, b)
        if wt != _LEN:
            continue
        if number == _V2_NAME:
            spans.name = _text(buf[x:y])
        elif number == _V2_TYPE:
            spans.type = _text(buf[x:y])
        elif number == _V2_BLOBS:
            spans.blobs.append((x, y))


def _scan_v1(buf: bytes, a: int, b: int, spans: _LayerSpans, v0: _LayerSpans) -> None:
    pos = a
    while pos < b:
        number, wt, x, y, pos = _next_field(buf, pos, b)
        if number == _V1_NAME and wt == _LEN:
            spans.name = _text(buf[x:y])
        elif number == _V1_TYPE and wt == _VARINT:
            # An enum value this schema does not know stays an unknown field in
            # protobuf, so the type keeps its previous value.
            if x in V1_LAYER_TYPES:
                spans.type = V1_LAYER_TYPES[x]
        elif number == _V1_BLOBS and wt == _LEN:
            spans.blobs.append((x, y))
        elif number == _V1_V0LAYER and wt == _LEN:
            v0.v0 = True  # a singular message seen twice merges: name/type last, blobs append
            p = x
            while p < y:
                n2, wt2, x2, y2, p = _next_field(buf, p, y)
                if wt2 != _LEN:
                    continue
                if n2 == _V0_NAME:
                    v0.name = _text(buf[x2:y2])
                elif n2 == _V0_TYPE:
                    raw = _text(buf[x2:y2])
                    v0.type = V0_LAYER_TYPES.get(raw, raw)
                elif n2 == _V0_BLOBS:
                    v0.blobs.append((x2, y2))


def _layer_label(spans: _LayerSpans) -> str:
    if spans.name is None:
        return f"layer #{spans.index}"
    return f"layer '{spans.name}' (#{spans.index})"


def read_caffemodel(path: str | os.PathLike) -> list[LayerBlobs]:
    """The layers of a binary ``NetParameter`` that carry weights, in file order.

    Reads V2 (``layer``), V1 (``layers``) and V0 (``layers { layer { ... } }``)
    nets; V1/V0 layer types are translated to V2 type strings as Caffe's
    upgrade does.  Layers without blobs are left out.  Arrays are float32, or
    float64 for a blob stored as ``double_data``, and own their memory.

    The structure is scanned through an ``mmap`` that is closed again before
    the arrays are allocated and read into from the file, so peak memory is
    about the weights' size (see the module docstring).

    Raises :class:`ConvnetError` naming the file (and the layer, where known)
    for a file that is unreadable, truncated or malformed, or whose blob sizes
    disagree with their shapes.
    """
    f, buf = _open_mapped(path)
    mapped = isinstance(buf, mmap.mmap)
    try:
        try:
            plans = _plan_caffemodel(path, buf)
        finally:
            if mapped:
                buf.close()  # before the arrays are filled: its pages no longer count
        out: list[LayerBlobs] = []
        for name, ltype, blob_plans in plans:
            if mapped:
                arrays = [_fill_from_file(plan, f) for plan in blob_plans]
            else:
                arrays = [_fill_from_buffer(plan, buf) for plan in blob_plans]
            out.append(LayerBlobs(name, ltype, arrays))
        return out
    except _ShortRead as e:
        raise ConvnetError(
            f"{path}: cannot read: the file changed while being read ({e})") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        f.close()


class _PageDropper:
    """Unmaps the pages a scan of an ``mmap`` touched, every ``_DROP_EVERY`` bytes it advances.

    A scan touches only tags and lengths, but each touch maps a page or more
    (the kernel maps neighbouring cached pages too); for a file of many small
    blobs that would add up to much of the file.  ``MADV_DONTNEED`` on a
    read-only file mapping just unmaps: the page cache keeps the data.
    """

    def __init__(self, buf):
        self.mm = buf if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") else None
        self.mark = 0

    def at(self, pos: int) -> None:
        if self.mm is not None and abs(pos - self.mark) >= _DROP_EVERY:
            self.drop()
            self.mark = pos

    def drop(self) -> None:
        if self.mm is not None:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED)
            except OSError:
                self.mm = None


_DROP_EVERY = 16 << 20


def _plan_caffemodel(path, buf) -> list[tuple[str, str, list[_BlobPlan]]]:
    """Scan the ``NetParameter`` in ``buf``: (name, type, blob plans) of each layer with blobs."""
    end = len(buf)
    if not end:
        raise ConvnetError(f"{path}: empty file, not a caffemodel")
    pager = _PageDropper(buf)
    v2: list[tuple[int, int]] = []
    v1: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < end:
            number, wt, a, b, pos = _next_field(buf, pos, end)
            if wt == _LEN:
                if number == _NET_LAYER:
                    v2.append((a, b))
                elif number == _NET_LAYERS:
                    v1.append((a, b))
            pager.at(pos)
    except _WireError as e:
        raise ConvnetError(
            f"{path}: corrupt caffemodel after {len(v2) + len(v1)} layers: {e.message} "
            f"at byte {e.pos}") from None
    if v2 and v1:
        raise ConvnetError(
            f"{path}: holds both V2 'layer' ({len(v2)}) and V1 'layers' ({len(v1)}) entries; "
            "Caffe refuses such a net")
    if not v2 and not v1:
        raise ConvnetError(f"{path}: no layers found; not a caffemodel "
                           "(a .binaryproto mean file is read with read_blobproto)")

    layers: list[_LayerSpans] = []
    any_v0 = False
    for index, (a, b) in enumerate(v2 or v1):
        spans = _LayerSpans(index)
        try:
            if v2:
                _scan_v2(buf, a, b, spans)
            else:
                v0 = _LayerSpans(index, v0=False)
                _scan_v1(buf, a, b, spans, v0)
                if v0.v0:
                    any_v0 = True
                    spans = v0
        except _WireError as e:
            raise ConvnetError(f"{path}: {_layer_label(spans)}: corrupt layer: {e.message} "
                               f"at byte {e.pos}") from None
        layers.append(spans)
        pager.at(b)
    if any_v0:
        # Caffe's V0->V1 upgrade rebuilds every layer from its V0 part only.
        layers = [s if s.v0 else _LayerSpans(s.index) for s in layers]

    out: list[tuple[str, str, list[_BlobPlan]]] = []
    for spans in layers:
        if not spans.blobs:
            continue
        plans = []
        for j, (a, b) in enumerate(spans.blobs):
            try:
                plans.append(_scan_blob(buf, a, b))
            except _WireError as e:
                raise ConvnetError(f"{path}: {_layer_label(spans)}: blob {j} is corrupt: "
                                   f"{e.message} at byte {e.pos}") from None
            except _BlobError as e:
                raise ConvnetError(f"{path}: {_layer_label(spans)}: blob {j}: {e}") from None
        pager.at(b)
        out.append((spans.name or "", spans.type, plans))
    return out


def read_blobproto(path: str | os.PathLike) -> np.ndarray:
    """The array in a single-``BlobProto`` file such as a ``.binaryproto`` mean.

    Shaped like :func:`read_caffemodel`'s blobs (a legacy mean is 4-D
    ``(1, channels, height, width)``); float32, or float64 for ``double_data``.
    """
    buf = _read_bytes(path)
    if not buf:
        raise ConvnetError(f"{path}: empty file, not a BlobProto")
    try:
        return _decode_blob(buf, 0, len(buf))
    except _WireError as e:
        raise ConvnetError(f"{path}: corrupt BlobProto: {e.message} at byte {e.pos}") from None
    except _EmptyBlob:
        raise ConvnetError(f"{path}: no blob fields found; not a BlobProto "
                           "(a .caffemodel is read with read_caffemodel)") from None
    except _BlobError as e:
        raise ConvnetError(f"{path}: {e}") from None
