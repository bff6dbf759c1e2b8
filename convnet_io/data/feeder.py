"""Feed a graph's source layers: batches of transformed records as ``{top value id: tensor}``.

Every source node of the graph gets its own stream of batches:

* ``Data`` (LMDB of Datums), ``ImageData`` (list file of images), ``HDF5Data`` (list of .h5
  files): records -> Caffe's DataTransformer (not for HDF5) -> batches of the layer's
  ``batch_size`` per process;
* ``DummyData``: its fillers (constant 0 unless the net names others), refilled every batch for
  random fillers, as Caffe does;
* ``Input`` / ``MemoryData``: fed by the user. Arrays given as ``inputs={top: array}`` (records
  along the first axis) are batched like any source; tops without arrays are left out of the feed
  (``feeder.unfed``) for the caller to add.

**Record order and sharding.** A source is read as an endless stream: epoch ``e`` reads all
``N`` records (in stored order, or in a fresh permutation per epoch for ImageData/HDF5Data with
``shuffle``), then epoch ``e + 1`` starts, as Caffe's cursor wraps around. Stream position ``g``
goes to rank ``g % world_size`` (Caffe's ``DataLayer::Skip``), so ranks read disjoint records and
together read every record exactly once per epoch. Rank ``r``'s ``k``-th record is position
``rand_skip_offset + k * world_size + r``, and batch ``b`` is its records ``b*B .. b*B+B-1``:
any batch can be computed directly, which makes ``start_batch`` (resuming) free.

**Determinism.** Each record's random crop, mirror and PCA draw come from a generator seeded by
``(seed, layer, epoch, record index)``; shuffles by ``(seed, layer, epoch)``. Batches therefore do
not depend on the number of workers, and a run resumed at ``start_batch`` continues exactly.
All ranks must use the same seed.

**Bad records.** A missing or undecodable image, a corrupt Datum, a label outside
``[0, num_classes)``, or a record whose size does not fit the net raises a ConvnetError naming
the layer and the record (path or LMDB key). With ``skip_bad`` the record is skipped and counted
(``feeder.skipped``, ``feeder.bad_records``) and its slot is filled by the record of the same slot
in this rank's next batch (drawn with different random numbers).

Loading and augmentation run in ``torch.utils.data.DataLoader`` worker processes
(``workers``, ``prefetch`` batches each, persistent), so the model does not wait on data;
``workers=0`` computes batches in the calling process.

"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from convnet_io.data.feeds import (
    IMAGE_TYPES,
    USER_FED_TYPES,
    FeederOptions,
    _Ctx,
    _dummy_fillers_of,
    _DummyFeed,
    _pca,
    _rand_skip,
    _RecordFeed,
    make_source,
)
from convnet_io.data.transform import DataTransformer
from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph, Node


class _Batches:
    """The dataset a DataLoader reads: item ``b`` is batch ``b`` of every feed."""

    def __init__(self, feeds: list, ctx: _Ctx):
        self.feeds, self.ctx = feeds, ctx

    def __getitem__(self, b: int) -> tuple[dict[str, np.ndarray], list[tuple[str, str]], str | None]:
        out: dict[str, np.ndarray] = {}
        skipped: list[tuple[str, str]] = []
        try:
            for feed in self.feeds:
                arrays, sk = feed.make_batch(int(b), self.ctx)
                out.update(zip(feed.tops, arrays))
                skipped.extend(sk)
        except ConvnetError as e:  # sent back as text: the worker's traceback is not the user's
            return {}, skipped, str(e)
        return out, skipped, None


def _to_tensors(item):
    import torch

    arrays, skipped, error = item
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, skipped, error


def _worker_init(_worker_id: int) -> None:
    import signal

    import torch

    # Ctrl-C and SIGTERM reach the whole process group: the training process handles them
    # (snapshot, then stop) and ends its workers itself, so they must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from convnet_io.data.image import _cv2
    from convnet_io.data.lmdb_source import forget_inherited_envs

    forget_inherited_envs()
    torch.set_num_threads(1)
    if _cv2 is not None:
        _cv2.setNumThreads(1)


class _FromBatch:
    """Batch indices ``start, start + 1, ...`` without end (a DataLoader sampler)."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        b = self.start
        while True:
            yield b
            b += 1


class DataFeeder:
    """Batches for every source layer of ``graph``, as ``{top value id: torch.Tensor}``.

    ``DataFeeder(graph, phase=None, options=None, start_batch=0, net=None, **option_overrides)``:
    ``phase`` defaults to the graph's; ``net`` (the NetParameter) supplies what the graph does not
    keep (DummyData fillers, ``rand_skip``). Iterate it (``next(feeder)``) for batches
    ``start_batch, start_batch + 1, ...`` without end; :meth:`batch` computes any batch directly.
    """

    def __init__(self, graph: Graph, phase: str | None = None, options: FeederOptions | None = None, *,
                 start_batch: int = 0, net: Any = None, **overrides: Any):
        opts = options or FeederOptions()
        if overrides:
            unknown = set(overrides) - {f.name for f in dataclasses.fields(FeederOptions)}
            if unknown:
                raise TypeError(f"unknown feeder option(s): {', '.join(sorted(unknown))}")
            opts = dataclasses.replace(opts, **overrides)
        if opts.world_size < 1 or not 0 <= opts.rank < opts.world_size:
            raise ConvnetError(f"rank {opts.rank} is not in 0..{opts.world_size - 1}")
        if opts.workers < 0 or opts.prefetch < 1:
            raise ConvnetError("workers must be >= 0 and prefetch >= 1")
        if opts.num_classes is not None and opts.num_classes < 1:
            raise ConvnetError(f"num_classes must be positive, not {opts.num_classes}")
        if start_batch < 0:
            raise ConvnetError(f"start_batch must be >= 0, not {start_batch}")
        self.graph = graph
        self.options = opts
        self.phase = (phase or graph.phase).upper()
        self.notices: list[str] = []
        self.unfed: list[str] = []
        self.skipped = 0
        self.bad_records: dict[str, str] = {}
        self._ctx = _Ctx(int(opts.seed), opts.rank, opts.world_size, opts.skip_bad, opts.num_classes,
                         opts.check_shapes)
        known = {n.name for n in graph.nodes if n.is_source}
        stray = set(opts.sources) - known
        if stray:
            raise ConvnetError(f"source override for unknown data layer(s): {', '.join(sorted(stray))} "
                               f"(the graph's source layers: {', '.join(sorted(known)) or 'none'})")
        self.feeds = [f for n in graph.nodes if n.is_source for f in [self._feed_for(n, net)] if f is not None]
        self._dataset = _Batches(self.feeds, self._ctx)
        self.next_batch = int(start_batch)
        self._loader = None
        self._sampler: _FromBatch | None = None
        self._it = None

    # -- construction -----------------------------------------------------------------------------
    def _expected(self, node: Node) -> list[tuple[int, ...] | None]:
        return [tuple(self.graph.shapes[t][1:]) if t in self.graph.shapes else None for t in node.tops]

    def _batch_size(self, node: Node, attrs_batch: int) -> int:
        if self.options.batch_size:
            return int(self.options.batch_size)
        if attrs_batch:
            return int(attrs_batch)
        return int(self.graph.shapes[node.tops[0]][0])

    def _feed_for(self, node: Node, net: Any):
        opts = self.options
        if node.type in USER_FED_TYPES:
            given = [t for t in node.tops if t in opts.inputs]
            if not given:
                self.unfed.extend(node.tops)
                return None
            if len(given) != len(node.tops):
                missing = [t for t in node.tops if t not in opts.inputs]
                raise ConvnetError(f"layer '{node.name}': inputs given for {', '.join(given)} but not "
                                   f"for {', '.join(missing)}")
            from convnet_io.data.synthetic import ArraySource

            try:
                source = ArraySource([opts.inputs[t] for t in node.tops], node.name, node.tops)
            except ValueError as e:
                raise ConvnetError(str(e)) from None
            batch = self._batch_size(node, 0)
            return _RecordFeed(node, source, batch, self._expected(node), None, ())
        if node.type == "DummyData":
            from convnet_io.data.synthetic import dummy_fillers

            fillers, known = _dummy_fillers_of(node, self.graph, net)
            if not known:
                self.notices.append(f"DummyData '{node.name}': fillers unknown (pass net=) - "
                                    "constant 0, Caffe's default, is used")
            try:
                fl = dummy_fillers(len(node.tops), fillers)
            except ValueError as e:
                raise ConvnetError(f"layer '{node.name}': {e}") from None
            return _DummyFeed(node, [tuple(self.graph.shapes[t]) for t in node.tops], fl)
        a = node.attrs
        blob_names = [self.graph.blob_of.get(t, t) for t in node.tops]
        source = make_source(node.type, node.name, a, blob_names, opts.sources.get(node.name))
        transformer = None
        label_tops: tuple[int, ...] = ()
        if node.type in IMAGE_TYPES:
            transformer = DataTransformer(a.transform, self.phase, layer=node.name,
                                          pca=_pca(opts.pca_lighting), mirror_at_test=opts.mirror_at_test)
            label_tops = (1,)
        elif node.type == "HDF5Data" and len(node.tops) > 1:
            label_tops = (1,)
        return _RecordFeed(node, source, self._batch_size(node, a.batch_size), self._expected(node),
                           transformer, label_tops, _rand_skip(node, net, opts.seed))

    # -- what it feeds -----------------------------------------------------------------------------
    @property
    def tops(self) -> list[str]:
        """The values each feed dict holds."""
        return [t for f in self.feeds for t in f.tops]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each fed value (batch first)."""
        out = {}
        for f in self.feeds:
            if isinstance(f, _DummyFeed):
                out.update(zip(f.tops, f.shapes))
            else:
                for t, e in zip(f.tops, f.expected):
                    out[t] = (f.batch, *(e or ()))
        return out

    @property
    def records(self) -> dict[str, int]:
        """Records per layer (the whole source, all ranks together)."""
        return {f.layer: len(f.source) for f in self.feeds if isinstance(f, _RecordFeed)}

    def batches_per_epoch(self, layer: str | None = None) -> float:
        """How many of this rank's batches make one pass over ``layer``'s records (the first
        record-reading layer by default)."""
        for f in self.feeds:
            if isinstance(f, _RecordFeed) and (layer is None or f.layer == layer):
                return len(f.source) / (f.batch * self._ctx.world)
        raise ConvnetError(f"no record-reading data layer{' ' + repr(layer) if layer else ''}")

    def record_indices(self, b: int, layer: str | None = None) -> list[tuple[int, int]]:
        """(epoch, record index) of each item of batch ``b`` of ``layer`` (bad records aside)."""
        for f in self.feeds:
            if isinstance(f, _RecordFeed) and (layer is None or f.layer == layer):
                return [f.record_at(b * f.batch + s, self._ctx) for s in range(f.batch)]
        raise ConvnetError(f"no record-reading data layer{' ' + repr(layer) if layer else ''}")

    # -- batches -----------------------------------------------------------------------------------
    def _finish(self, item, b: int) -> dict[str, Any]:
        import torch

        arrays, skipped, error = item
        for name, reason in skipped:
            self.skipped += 1
            self.bad_records[name] = reason
        if error is not None:
            raise ConvnetError(f"batch {b}: {error}")
        return {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v)))
                for k, v in arrays.items()}

    def batch(self, b: int) -> dict[str, Any]:
        """Batch ``b``, computed in this process (does not move the iterator)."""
        return self._finish(self._dataset[int(b)], int(b))

    def __iter__(self) -> "DataFeeder":
        return self

    def __next__(self) -> dict[str, Any]:
        b = self.next_batch
        if self.options.workers == 0:
            item = self._dataset[b]
        else:
            if self._it is None:
                self._start()
            item = next(self._it)
        self.next_batch = b + 1
        return self._finish(item, b)

    def _start(self) -> None:
        import torch
        from torch.utils.data import DataLoader

        if self._loader is None:
            self._sampler = _FromBatch(self.next_batch)
            self._loader = DataLoader(
                self._dataset, batch_size=None, sampler=self._sampler, num_workers=self.options.workers,
                prefetch_factor=self.options.prefetch, persistent_workers=True, collate_fn=_to_tensors,
                # Forking a process whose thread pools (OpenMP, MKL) are running can deadlock the
                # child; workers start from a clean interpreter instead.
                multiprocessing_context="spawn",
                worker_init_fn=_worker_init, pin_memory=self.options.pin_memory and torch.cuda.is_available())
        self._sampler.start = self.next_batch
        self._it = iter(self._loader)

    def seek(self, b: int) -> None:
        """Continue from batch ``b`` (prefetched batches are dropped)."""
        if b < 0:
            raise ConvnetError(f"batch must be >= 0, not {b}")
        self.next_batch = int(b)
        if self._it is not None:
            self._start()

    def close(self) -> None:
        """Stop the worker processes (iteration starts them again)."""
        it, self._it, self._loader = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __enter__(self) -> "DataFeeder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
