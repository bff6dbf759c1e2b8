"""What ``convnet train`` and ``convnet plot-log`` call: the options, the (multi-process) run, the
metrics file and its plot."""
from convnet_io.train.config import TrainOptions
from convnet_io.train.distributed import run_training
from convnet_io.train.metrics import plot_metrics, read_metrics

__all__ = ["TrainOptions", "plot_metrics", "read_metrics", "run_training"]
