"""One process, ``--nproc N`` processes on this machine, or processes started by torchrun."""
from __future__ import annotations

import os
import socket
from typing import Any

from convnet_io.train.config import TrainOptions


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend(opts: TrainOptions) -> str:
    import torch

    cuda = opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def _run_rank(rank: int, world_size: int, opts: TrainOptions, results: Any = None) -> dict | None:
    import torch
    import torch.distributed as dist

    from convnet_io.train.trainer import Trainer

    backend = _backend(opts)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        # Different ranks must not print over each other; only rank 0 logs and snapshots.
        result = Trainer(opts, rank=rank, world_size=world_size).train()
        if results is not None and rank == 0:
            results.put(result)
        return result
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, world_size: int, opts: TrainOptions, port: int, results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if "OMP_NUM_THREADS" not in os.environ:
        # N processes on one machine share its cores: N x all-cores intra-op threads would
        # oversubscribe them (each thread pool spinning while the others' threads hold the cores).
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    _run_rank(rank, world_size, opts, results)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def run_training(opts: TrainOptions, nproc: int = 1) -> dict:
    """Train; returns rank 0's summary (iterations, seconds, images/s, last test results)."""
    if launched_by_torchrun():
        return _run_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), opts) or {}
    if nproc <= 1:
        from convnet_io.train.trainer import Trainer

        return Trainer(opts).train()
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_spawned, args=(nproc, opts, _free_port(), results), nprocs=nproc, join=True,
                       start_method="spawn")
    return results.get() if not results.empty() else {}
