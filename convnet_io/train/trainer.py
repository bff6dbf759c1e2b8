"""``convnet train``: Caffe's Solver::Solve on a PyTorch model.

The loop follows Caffe's ``Solver::Step``: test every ``test_interval`` iterations, run
``iter_size`` forward/backward passes, log every ``display`` iterations with the loss smoothed
over ``average_loss`` iterations, apply Caffe's update, snapshot every ``snapshot`` iterations;
then snapshot (``snapshot_after_train``) and test once more at the end. Several processes
(torch.distributed) average their gradients before the update, as Caffe's multi-GPU training.
"""
from __future__ import annotations

import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convnet_io.atomic import write_bytes_atomic
from convnet_io.caffe.builder import build_graph
from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph
from convnet_io.torch_model import CaffeModule
from convnet_io.train.config import TrainOptions, apply_overrides, net_parameters, read_solver
from convnet_io.train.metrics import MetricsLog, log
from convnet_io.train.prefix_lock import PrefixLock
from convnet_io.train.snapshot import learned_net_path, read_solverstate, snapshot_paths


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConvnetError("--device cuda: no CUDA device is available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class Trainer:
    def __init__(self, opts: TrainOptions, rank: int = 0, world_size: int = 1):
        from convnet_io.graph.initialize import initial_blobs

        self.opts, self.rank, self.world_size = opts, rank, world_size
        self.root = rank == 0
        self.param = read_solver(opts.solver)
        apply_overrides(self.param, opts)
        self.seed = self.param.random_seed if self.param.random_seed >= 0 else 0
        self.device = pick_device(opts.device)
        train_net, test_net, notes = net_parameters(self.param, opts)
        self.notes = notes
        self.train_net, self.test_net = train_net, test_net or train_net
        self.train_graph = self._graph(self.train_net, "TRAIN", self.param.train_state)
        testing = len(self.param.test_iter) and self.param.test_interval and self.param.test_iter[0] > 0
        self.test_graph = (self._graph(self.test_net, "TEST", self.param.test_state[0] if len(self.param.test_state) else None)
                           if testing else None)
        self._test_feeder = None
        torch.manual_seed(self.seed)
        self.module = CaffeModule(self.train_graph)
        blobs = initial_blobs(self.train_graph, self.seed)
        if opts.weights:
            from convnet_io.caffe.weights import check_weights

            report = check_weights(self.train_graph, opts.weights, strict=False)
            self.notes += report.warnings
            blobs.update(report.blobs)
        self._set_blobs(self.module, blobs)
        self.module.to(self.device).train()
        self.test_module = None
        if self.test_graph is not None:
            self.test_module = CaffeModule(self.test_graph).to(self.device).eval()
            self.test_module.share_weights_with(self.module)
        from convnet_io.train.solver import CaffeSolver

        self.solver = CaffeSolver(self.param, self._learnable_blobs())
        self.loss_tops = [(t, w) for n in self.train_graph.nodes for t, w in zip(n.tops, n.loss_weights) if w]
        if not self.loss_tops:
            raise ConvnetError("the TRAIN net has no loss (no layer with a loss weight)")
        self.prefix = self.param.snapshot_prefix or str(Path(opts.solver).with_suffix(""))
        self.metrics = MetricsLog(opts.log_json if self.root else None)
        self.stop_requested = False
        # Hooks for pycaffe's solvers, which drive this loop from a script: the TRAIN batches to
        # use, extra values each step keeps, and a callback that sees each step's feeds and values.
        self.train_feeds = None
        self.watch_values: list[str] = []
        self.on_forward = None
        self.items_per_batch = self.train_graph.shapes[self.train_graph.inputs[0]][0] if self.train_graph.inputs else 1
        self._fast_cpu = False
        if opts.resume:
            self._resume(opts.resume)

    # -- set-up ------------------------------------------------------------------------------------
    def _graph(self, net: Any, phase: str, state: Any) -> Graph:
        from convnet_io.data import probe_source_shapes

        stages = tuple(state.stage) if state is not None else ()
        level = state.level if state is not None and state.HasField("level") else None
        # Data layers' shapes come from their first record (Caffe reads it in DataLayerSetUp).
        shapes = probe_source_shapes(net, phase, stages=stages, level=level)
        return build_graph(net, phase=phase, input_shapes=shapes or None, stages=stages, level=level,
                           source_path=self.opts.solver, notices=[])

    @staticmethod
    def _set_blobs(module: CaffeModule, blobs: dict[str, list[np.ndarray]]) -> None:
        targets = module.caffe_blobs()
        with torch.no_grad():
            for layer, arrays in blobs.items():
                for t, a in zip(targets.get(layer, []), arrays):
                    t.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(t.shape))

    def _learnable_blobs(self):
        from convnet_io.train.solver import LearnableBlob

        seen: set[int] = set()
        out = []
        for node in self.train_graph.nodes:
            if not node.params or node.type == "BatchNorm":
                continue
            tensors = self.module.layer(node.name).caffe_blobs()
            for i, (spec, t) in enumerate(zip(node.params, tensors)):
                if id(t) in seen or not isinstance(t, torch.nn.Parameter):
                    continue
                seen.add(id(t))
                out.append(LearnableBlob(t, spec.lr_mult, spec.decay_mult, f"{node.name}/{i}"))
        return out

    def _feeder(self, graph: Graph, phase: str, start_batch: int = 0, sharded: bool = True):
        from convnet_io.data import DataFeeder

        net = self.train_net if phase == "TRAIN" else self.test_net
        return DataFeeder(graph, phase, net=net, seed=self.seed, rank=self.rank if sharded else 0,
                          world_size=self.world_size if sharded else 1, workers=self.opts.workers,
                          start_batch=start_batch, skip_bad=self.opts.skip_bad_data,
                          pca_lighting=self.opts.pca_lighting and phase == "TRAIN")

    def _resume(self, path: str) -> None:
        from convnet_io.caffe.weights import check_weights

        state = read_solverstate(path)
        weights = learned_net_path(state, path)
        self._set_blobs(self.module, check_weights(self.train_graph, weights, strict=False).blobs)
        self.solver.load_state(state)
        if self.root:
            log(f"Resuming from {path} at iteration {self.solver.iteration} (weights {weights})")

    # -- the loop ----------------------------------------------------------------------------------
    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            if self.root and not self.stop_requested:
                log(f"{signal.Signals(signum).name} received: snapshotting, then stopping")
            self.stop_requested = True

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread
                pass
        return previous

    def use_fast_cpu_settings(self) -> None:
        """``convnet train`` on a CPU: freed memory kept by the allocator, channels-last blobs
        where the whole net handles them (train/speed.py): the same arithmetic with the sums in
        another order, so a run differs from an NCHW one in the last bits of float32. pycaffe
        scripts, which see the blobs as NumPy arrays, keep NCHW."""
        from convnet_io.train.speed import channels_last_fits, keep_freed_memory, to_channels_last

        if self.device.type != "cpu" or self._fast_cpu:
            return
        self._fast_cpu = True
        keep_freed_memory()
        self.solver.drop_diffs_after_update = True
        if channels_last_fits(self.train_graph) and (self.test_graph is None or channels_last_fits(self.test_graph)):
            to_channels_last(self.module)
            if self.test_module is not None:
                to_channels_last(self.test_module)
            self.solver.match_layout()

    def _to_device(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in feeds.items()}

    def _train_step(self, feeds_iter) -> tuple[float, dict[str, float]]:
        iter_size = max(self.param.iter_size, 1)
        outputs_sum: dict[str, float] = {}
        loss_sum = 0.0
        wanted = list(dict.fromkeys([t for t, _ in self.loss_tops] + self.train_graph.outputs + self.watch_values))
        for sub in range(iter_size):
            torch.manual_seed(self.seed * 1_000_003 + (self.solver.iteration * iter_size + sub) * 7919 + self.rank)
            feeds = self._to_device(next(feeds_iter))
            out = self.module.run(feeds, wanted)
            if self.on_forward is not None:
                self.on_forward(feeds, out)
            loss = sum(w * out[t].sum() for t, w in self.loss_tops)
            loss.backward()
            loss_sum += float(loss.detach())
            for name in self.train_graph.outputs:
                outputs_sum[name] = outputs_sum.get(name, 0.0) + float(out[name].detach().float().mean())
        if self.world_size > 1:
            self._average_gradients()
        return loss_sum / iter_size, {k: v / iter_size for k, v in outputs_sum.items()}

    def _average_gradients(self) -> None:
        import torch.distributed as dist

        grads = [b.tensor.grad if b.tensor.grad is not None else torch.zeros_like(b.tensor)
                 for b in self.solver.blobs]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for b, g in zip(self.solver.blobs, grads):
            n = g.numel()
            b.tensor.grad = flat[offset:offset + n].view_as(b.tensor).clone()
            offset += n

    def test(self) -> dict[str, float]:
        """Caffe's TestAll: the mean of each TEST net output over test_iter batches."""
        if self.test_module is None:
            return {}
        it = self.solver.iteration
        log(f"Iteration {it}, Testing net (#0)")
        # One TEST feeder for the whole run: like Caffe's test data layer, each test pass carries
        # on where the last one stopped. Only rank 0 tests, on all the data.
        if self._test_feeder is None:
            self._test_feeder = iter(self._feeder(self.test_graph, "TEST", sharded=False))
        feeder = self._test_feeder
        sums: dict[str, float] = {}
        outputs = self.test_graph.outputs
        n = self.param.test_iter[0]
        with torch.no_grad():
            for _ in range(n):
                out = self.test_module.run(self._to_device(next(feeder)), outputs)
                for name in outputs:
                    sums[name] = sums.get(name, 0.0) + float(out[name].float().mean())
        weights = {t: w for node in self.test_graph.nodes for t, w in zip(node.tops, node.loss_weights)}
        result = {}
        for i, name in enumerate(outputs):
            value = sums[name] / n
            blob = self.test_graph.blob_of[name]
            result[blob] = value
            w = weights.get(name, 0.0)
            extra = f" (* {w:g} = {value * w:g} loss)" if w else ""
            log(f"    Test net output #{i}: {blob} = {value:g}{extra}")
        self.metrics.write({"phase": "test", "iter": it, **result})
        return result

    def snapshot(self) -> tuple[Path, Path]:
        from convnet_io.caffe.caffemodel import write_caffemodel
        from convnet_io.caffe.weights import layer_blobs

        it = self.solver.iteration
        model_path, state_path = snapshot_paths(self.prefix, it)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        blobs = {k: [t.detach().cpu().contiguous().numpy() for t in v] for k, v in self.module.caffe_blobs().items()}
        write_caffemodel(model_path, layer_blobs(self.train_graph, blobs), net_name=self.train_graph.name)
        log(f"Snapshotting to binary proto file {model_path}")
        state = self.solver.to_state(learned_net=str(model_path))
        write_bytes_atomic(state_path, state.SerializeToString())
        log(f"Snapshotting solver state to binary proto file {state_path}")
        return model_path, state_path

    def train(self) -> dict[str, Any]:
        """Run to max_iter (or until a stop signal); returns the last test results and timings."""
        p = self.param
        lock = PrefixLock(self.prefix).acquire() if self.root else None
        previous = self._install_signal_handlers()
        if self.root:
            for note in self.notes:
                log(f"note: {note}")
            log(f"Solving {self.train_graph.name or 'net'} on {self.device} ({self.world_size} process"
                f"{'es' if self.world_size > 1 else ''}), solver {p.type or 'SGD'}, "
                f"{len(self.solver.blobs)} learnable blobs")
        iter_size = max(p.iter_size, 1)
        if self.train_feeds is None:
            self.use_fast_cpu_settings()
        feeds_iter = self.train_feeds if self.train_feeds is not None else \
            iter(self._feeder(self.train_graph, "TRAIN", start_batch=self.solver.iteration * iter_size))
        losses: deque[float] = deque(maxlen=max(p.average_loss, 1))
        last_test: dict[str, float] = {}
        t_display, n_display = time.perf_counter(), 0
        t_start, start_iter = time.perf_counter(), self.solver.iteration
        progress = None
        if self.root and self.opts.progress:
            from tqdm import tqdm

            progress = tqdm(total=p.max_iter, initial=self.solver.iteration, unit="iter", leave=False)
        try:
            while self.solver.iteration < p.max_iter:
                it = self.solver.iteration
                if self.root and p.test_interval and it % p.test_interval == 0 and (it > 0 or p.test_initialization):
                    last_test = self.test()
                loss, outputs = self._train_step(feeds_iter)
                losses.append(loss)
                n_display += 1
                display = p.display and it % p.display == 0
                rate = self.solver.step()
                if progress:
                    progress.update(1)
                if self.root and display:
                    elapsed = time.perf_counter() - t_display
                    images = n_display * self.items_per_batch * iter_size * self.world_size
                    speed = images / elapsed if elapsed > 0 else 0.0
                    smoothed = sum(losses) / len(losses)
                    log(f"Iteration {it} ({n_display / elapsed if elapsed else 0:.2f} iter/s, {speed:.1f} images/s), "
                        f"loss = {smoothed:g}")
                    for i, (name, value) in enumerate(outputs.items()):
                        log(f"    Train net output #{i}: {self.train_graph.blob_of[name]} = {value:g}")
                    log(f"Iteration {it}, lr = {rate:g}")
                    self.metrics.write({"phase": "train", "iter": it, "loss": smoothed, "lr": rate,
                                        "images_per_s": round(speed, 2)})
                    t_display, n_display = time.perf_counter(), 0
                if self.root and p.snapshot and self.solver.iteration % p.snapshot == 0:
                    self.snapshot()
                if self._stop_everywhere():
                    break
            if self.root:
                done = self.solver.iteration
                on_boundary = bool(p.snapshot) and done % p.snapshot == 0
                # A stop signal always snapshots (Caffe's --sigint_effect snapshot); otherwise
                # snapshot_after_train decides, unless this iteration was just snapshotted.
                if not on_boundary and (p.snapshot_after_train or self.stop_requested):
                    self.snapshot()
                if self.stop_requested:
                    log("Optimization stopped early.")
                else:
                    if p.display and done % p.display == 0:
                        # Caffe's Solve: one more forward pass to report the final loss.
                        with torch.no_grad():
                            feeds = self._to_device(next(feeds_iter))
                            out = self.module.run(feeds, [t for t, _ in self.loss_tops])
                            losses.append(float(sum(w * out[t].sum() for t, w in self.loss_tops)))
                        log(f"Iteration {done}, loss = {sum(losses) / len(losses):g}")
                    if p.test_interval and done % p.test_interval == 0 and self.test_module is not None:
                        last_test = self.test()
                    log("Optimization Done.")
        finally:
            if lock is not None:
                lock.release()
            if progress:
                progress.close()
            self.metrics.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        seconds = time.perf_counter() - t_start
        iters = self.solver.iteration - start_iter
        return {"iterations": iters, "seconds": seconds, "test": last_test,
                "images_per_s": iters * self.items_per_batch * iter_size * self.world_size / seconds if seconds else 0.0}

    def _stop_everywhere(self) -> bool:
        if self.world_size == 1:
            return self.stop_requested
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.stop_requested else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.stop_requested = bool(flag.item())
        return self.stop_requested
