"""What ``convnet build`` reports: the per-layer summary table and the check of weights against a net."""
from convnet_io.caffe.weights import check_weights
from convnet_io.graph.summary import format_table, summarize

__all__ = ["check_weights", "format_table", "summarize"]
