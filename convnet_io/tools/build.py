"""What ``convnet build`` reports: the per-layer summary table and the check of weights against a net."""
from convnet_io.graph.summary import format_table, summarize

__all__ = ["check_weights", "format_table", "summarize"]


def check_weights(*args, **kwargs):
    """``convnet_io.caffe.weights.check_weights``, imported on use: a build without ``--weights``
    needs no NumPy (about a third of the command's start-up)."""
    from convnet_io.caffe.weights import check_weights as check

    return check(*args, **kwargs)
