"""pycaffe on convnet: ``import convnet_io.pycaffe as caffe`` gives Caffe's Python interface
(``Net``, solvers, ``io``, ``Classifier``, ``Detector``, ``NetSpec``; ``caffe.draw`` by import)
running on convnet. ``convnet pycaffe SCRIPT.py`` runs a script whose ``import caffe`` gets this
package."""
from __future__ import annotations

from convnet_io.pycaffe import io
from convnet_io.pycaffe.classifier import Classifier, Detector
from convnet_io.pycaffe.globals import (
    NCCL,
    Layer,
    Timer,
    __version__,
    get_mode,
    has_nccl,
    init_log,
    layer_type_list,
    log,
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_multiprocess,
    set_random_seed,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from convnet_io.pycaffe.net import TEST, TRAIN, Net
from convnet_io.pycaffe.net_spec import NetSpec, layers, params, to_proto
from convnet_io.pycaffe.python_layer import python_layers_allowed as allow_python_layers
from convnet_io.pycaffe.solver import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    get_solver,
)

__all__ = [
    "NCCL",
    "TEST",
    "TRAIN",
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "Classifier",
    "Detector",
    "Layer",
    "NesterovSolver",
    "Net",
    "NetSpec",
    "RMSPropSolver",
    "SGDSolver",
    "Timer",
    "__version__",
    "allow_python_layers",
    "get_mode",
    "get_solver",
    "has_nccl",
    "init_log",
    "io",
    "layer_type_list",
    "layers",
    "log",
    "params",
    "set_device",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_multiprocess",
    "set_random_seed",
    "set_solver_count",
    "set_solver_rank",
    "solver_count",
    "solver_rank",
    "to_proto",
]
