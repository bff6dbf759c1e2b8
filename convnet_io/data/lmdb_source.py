"""LMDB databases of Datums: the source of Caffe's ``Data`` layer, and the writer the tools use.

Records are read in key order, as Caffe's cursor reads them (``convert_imageset`` keys start with
the zero-padded line number, so key order is list order).

py-lmdb refuses to open one environment twice in a process, and an environment must not be used
across ``fork``: environments are kept in one per-process table, and a forked DataLoader worker
closes the copies it inherited before opening its own.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from convnet_io.data.base import BadRecord, RecordSource
from convnet_io.data.datum import read_datum
from convnet_io.errors import ConvnetError

_ENVS: dict[str, tuple[int, object, tuple[int, int]]] = {}


def _key(path: str) -> str:
    return os.path.realpath(path)


def is_lmdb(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / "data.mdb").is_file()) or (p.is_file() and p.suffix == ".mdb")


def _identity(path: str) -> tuple[int, int]:
    data = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
    st = os.stat(data)
    return st.st_dev, st.st_ino


def open_env(path: str | os.PathLike):
    """A read-only LMDB environment for ``path`` (a Caffe LMDB directory), shared in this process
    (reopened when the database at ``path`` was replaced)."""
    import lmdb

    path = os.fspath(path)
    key = _key(path)
    entry = _ENVS.get(key)
    if entry is not None:
        pid, env, ident = entry
        try:
            same = pid == os.getpid() and _identity(path) == ident
        except OSError:
            same = False
        if same:
            return env
        try:  # inherited through fork, or the database was replaced: drop this copy
            env.close()
        except Exception:  # noqa: BLE001
            pass
        del _ENVS[key]
    if not os.path.exists(path):
        raise ConvnetError(f"{path}: no such LMDB database")
    if not is_lmdb(path):
        raise ConvnetError(f"{path}: not an LMDB database (no data.mdb); LevelDB is not supported, "
                           "convert the images with 'convnet convert-imageset'")
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False,
                        subdir=os.path.isdir(path), max_readers=512)
    except lmdb.Error as e:
        raise ConvnetError(f"{path}: cannot open LMDB: {e}") from None
    _ENVS[key] = (os.getpid(), env, _identity(path))
    return env


def close_env(path: str | os.PathLike) -> None:
    entry = _ENVS.pop(_key(os.fspath(path)), None)
    if entry is not None:
        try:
            entry[1].close()
        except Exception:  # noqa: BLE001
            pass


def forget_inherited_envs() -> None:
    """Close environments a forked process inherited (a DataLoader worker calls this first)."""
    me = os.getpid()
    for key, (pid, env, _) in list(_ENVS.items()):
        if pid != me:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
            del _ENVS[key]


def list_keys(path: str | os.PathLike) -> np.ndarray:
    """Every key in cursor order, as a compact fixed-width bytes array."""
    env = open_env(path)
    with env.begin(buffers=False) as txn:
        keys = [k for k in txn.cursor().iternext(keys=True, values=False)]
    if not keys:
        return np.zeros(0, dtype="S1")
    return np.array(keys, dtype=f"S{max(len(k) for k in keys)}")


def iter_records(path: str | os.PathLike) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs in cursor order."""
    env = open_env(path)
    with env.begin(buffers=False) as txn:
        for k, v in txn.cursor():
            yield k, v


def key_text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


class LMDBSource(RecordSource):
    """Caffe's ``Data`` layer source: ``(C x H x W image, label)`` Datums from an LMDB.

    ``decode`` is how encoded Datums are decoded: ``native``, ``color`` (transform_param
    ``force_color``) or ``gray`` (``force_gray``)."""

    kind = "Data"

    def __init__(self, path: str | os.PathLike, layer: str = "", decode: str = "native"):
        self.path = os.fspath(path)
        self.layer = layer
        self.decode = decode
        self.keys = list_keys(self.path)
        self._env = None
        self._pid = -1
        if len(self.keys) == 0:
            raise ConvnetError(f"{self.path}: the LMDB database is empty")

    def __len__(self) -> int:
        return len(self.keys)

    def name_of(self, index: int) -> str:
        return f"{self.path}: key '{key_text(bytes(self.keys[index]))}'"

    def raw(self, index: int) -> bytes:
        key = bytes(self.keys[index])
        if self._env is None or self._pid != os.getpid():
            self._env, self._pid = open_env(self.path), os.getpid()
        with self._env.begin(buffers=False) as txn:
            value = txn.get(key)
        if value is None:
            raise BadRecord(self.name_of(index), "key vanished from the database")
        return value

    def read(self, index: int) -> list:
        data, label = read_datum(self.raw(index), self.name_of(index), self.decode)
        return [data, label]

    def close(self) -> None:
        self._env = None  # the environment stays shared in this process

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_env"], state["_pid"] = None, -1
        return state


class LMDBWriter:
    """Writes a new Caffe LMDB atomically: into a temporary directory beside ``path``, renamed into
    place by :meth:`finish`. Refuses an existing ``path``, as Caffe's ``db::NEW`` does."""

    def __init__(self, path: str | os.PathLike, commit_every: int = 1000, map_size: int = 1 << 28):
        import lmdb

        self.path = os.path.abspath(os.fspath(path))
        if os.path.lexists(self.path):
            raise ConvnetError(f"{path}: already exists; Caffe refuses to overwrite a database "
                               "(remove it or choose another name)")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise ConvnetError(f"{path}: the directory {parent} does not exist")
        try:
            self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise ConvnetError(f"{path}: cannot create a database here: {e.strerror or e}") from None
        self.map_size = map_size
        self.env = lmdb.open(self.tmp, map_size=map_size, subdir=True, meminit=False, map_async=True)
        self.pending: list[tuple[bytes, bytes]] = []
        self.commit_every = commit_every
        self.count = 0
        self._lmdb = lmdb

    def put(self, key: bytes | str, value: bytes) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8", "surrogateescape")
        if len(key) > self.env.max_key_size():
            raise ConvnetError(f"key '{key_text(key)[:60]}...' is longer than LMDB's {self.env.max_key_size()} bytes")
        self.pending.append((key, value))
        self.count += 1
        if len(self.pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Write the pending records in one transaction, growing the map until they fit."""
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        txn.put(k, v)
                self.pending = []
            except self._lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)

    def finish(self) -> None:
        self.commit()
        self.env.sync(True)
        self.env.close()
        if os.path.lexists(self.path):
            self.abort()
            raise ConvnetError(f"{self.path}: appeared while the database was being written; "
                               "left it alone")
        os.rename(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "LMDBWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
