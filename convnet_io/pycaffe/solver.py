"""pycaffe's solvers over ``convnet train``'s own loop: one ``Trainer`` (convnet_io.train) builds
the nets, runs each step's forward/backward, applies Caffe's update, tests and snapshots; the
solver's ``net`` and ``test_nets`` are pycaffe views of its modules sharing its data cursors."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from convnet_io.errors import ConvnetError
from convnet_io.pycaffe.net import Net


class Solver:
    """``caffe.SGDSolver(solver_prototxt)`` and the others: ``net``, ``test_nets``, ``iter``,
    ``step(n)``, ``solve()``, ``restore(path)``, ``snapshot()``, ``add_callback``."""

    solver_type: str | None = None  # None: the file's type (get_solver)

    def __init__(self, filename: str | Path):
        from convnet_io.pycaffe.python_layer import python_layers_allowed
        from convnet_io.train.config import TrainOptions
        from convnet_io.train.trainer import Trainer

        with python_layers_allowed(None):
            t = self._trainer = Trainer(TrainOptions(solver=str(filename), workers=0, device="cpu",
                                                     solver_type=self.solver_type))
        t.solver.clear_diffs_after_update = False  # Caffe clears them when the next step starts
        feeder = t._feeder(t.train_graph, "TRAIN")
        t.train_feeds = feeder
        self.net = Net._wrap(t.train_graph, t.module, t.train_net, feeder)
        self.test_nets: list[Net] = []
        if t.test_graph is not None:
            test_feeder = t._feeder(t.test_graph, "TEST", sharded=False)
            t._test_feeder = test_feeder  # TestAll and test_nets[0].forward() read one cursor
            self.test_nets.append(Net._wrap(t.test_graph, t.test_module, t.test_net, test_feeder))
        t.watch_values = list(t.train_graph.values)
        t.on_forward = self._record
        self._callbacks: list[tuple[Callable[[], Any], Callable[[], Any]]] = []
        self._losses: list[float] = []

    def _record(self, feeds: dict[str, Any], out: dict[str, Any]) -> None:
        """Each step's batch and blobs land in ``solver.net.blobs``, as in Caffe."""
        net = self.net
        net._env = None
        for v, tensor in feeds.items():
            net._store(v, tensor)
        for v in net._base_graph.values:
            if v in out:
                net._store(v, out[v])

    @property
    def iter(self) -> int:
        return self._trainer.solver.iteration

    @property
    def param(self) -> Any:
        """The SolverParameter in use."""
        return self._trainer.param

    @property
    def type(self) -> str:
        return self._trainer.solver.type

    def add_callback(self, on_start: Callable[[], Any], on_gradients_ready: Callable[[], Any]) -> None:
        self._callbacks.append((on_start, on_gradients_ready))

    def step(self, iters: int) -> None:
        """Caffe's Solver::Step: ``iters`` iterations of test (on schedule), forward/backward
        ``iter_size`` times, update, snapshot (on schedule)."""
        from convnet_io.train.metrics import log

        t = self._trainer
        p, s = t.param, t.solver
        for _ in range(int(iters)):
            for b in s.blobs:  # ClearParamDiffs
                if b.tensor.grad is not None:
                    b.tensor.grad.zero_()
            it = s.iteration
            if p.test_interval and it % p.test_interval == 0 and (it > 0 or p.test_initialization):
                t.test()
            for on_start, _ in self._callbacks:
                on_start()
            loss, outputs = t._train_step(t.train_feeds)
            self._losses = (self._losses + [loss])[-max(p.average_loss, 1):]
            if p.display and it % p.display == 0:
                log(f"Iteration {it}, loss = {sum(self._losses) / len(self._losses):g}")
                for i, (name, value) in enumerate(outputs.items()):
                    log(f"    Train net output #{i}: {t.train_graph.blob_of[name]} = {value:g}")
            for _, on_gradients_ready in self._callbacks:
                on_gradients_ready()
            rate = s.step()
            if p.display and it % p.display == 0:
                log(f"Iteration {it}, lr = {rate:g}")
            if p.snapshot and s.iteration % p.snapshot == 0:
                t.snapshot()

    def apply_update(self) -> None:
        """Caffe's ApplyUpdate from the diffs as they are (then the iteration advances)."""
        self._trainer.solver.step()

    def solve(self, resume_file: str | None = None) -> None:
        """Caffe's Solve: to ``max_iter`` with ``convnet train``'s loop (tests, snapshots, the
        closing test and loss line)."""
        if resume_file:
            self.restore(resume_file)
        self._trainer.solver.clear_diffs_after_update = True
        try:
            self._trainer.train()
        finally:
            self._trainer.solver.clear_diffs_after_update = False

    def restore(self, state_file: str) -> None:
        """Weights and solver state from a .solverstate; the TRAIN data continue where that
        iteration's batches are (convnet train's exact resume)."""
        t = self._trainer
        t._resume(state_file)
        t.train_feeds.seek(t.solver.iteration * max(t.param.iter_size, 1))

    def snapshot(self) -> None:
        """``<prefix>_iter_<N>.caffemodel`` and ``.solverstate``, as ``convnet train`` writes them."""
        self._trainer.snapshot()

    def share_weights(self, net: Net) -> None:
        net.share_with(self.net)


class SGDSolver(Solver):
    solver_type = "SGD"


class NesterovSolver(Solver):
    solver_type = "Nesterov"


class AdaGradSolver(Solver):
    solver_type = "AdaGrad"


class RMSPropSolver(Solver):
    solver_type = "RMSProp"


class AdaDeltaSolver(Solver):
    solver_type = "AdaDelta"


class AdamSolver(Solver):
    solver_type = "Adam"


def get_solver(filename: str | Path) -> Solver:
    """The solver the file's ``type`` names."""
    if not Path(filename).exists():
        raise ConvnetError(f"{filename}: no such solver file")
    return Solver(filename)
