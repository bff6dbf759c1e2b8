"""`convnet time`: per-layer forward (and backward) times, as `caffe time`."""
from __future__ import annotations

import json

import click
from convnet_cli.options import handle_errors, input_shape_option, parse_input_shapes, phase_option, print_notices


@click.command("time")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel (default: seeded initial weights).")
@click.option("--iterations", default=50, show_default=True, type=click.IntRange(min=1),
              help="Timed iterations; times are averaged over them.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0),
              help="Untimed iterations before the timed ones.")
@click.option("--backward", is_flag=True, help="Time each layer's backward too (torch backend).")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="torch: each CaffeModule submodule call; onnxruntime: the exported model, ORT's "
                   "profiler, node times summed per Caffe layer.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size of every input (default: the net's own).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when available (torch) / present (ONNX Runtime), else CPU.")
@click.option("--sort", is_flag=True, help="Rows by time, slowest first, instead of net order.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the initial weights (without --weights) and of the inputs.")
@phase_option
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def time_net(net, weights, iterations, warmup, backward, backend, batch, device, sort, seed, phase, input_shape,
             as_json):
    """Time NET layer by layer, as `caffe time`: the mean forward (and with --backward, backward)
    time of each layer in milliseconds over --iterations passes after --warmup, each layer's share
    of the total, the totals and the wall time of whole passes. Inputs are seeded noise (labels 0)."""
    from convnet_io.tools.timing import format_report, load_for_timing, time_torch
    from convnet_io.tools.timing_onnxruntime import time_onnxruntime

    if backward and backend != "torch":
        raise click.UsageError("--backward needs --backend torch (ONNX models are inference-only)")
    net_obj = load_for_timing(net, weights=weights, batch=batch, phase=phase, seed=seed,
                              input_shapes=parse_input_shapes(input_shape))
    if not as_json:
        print_notices(net_obj.graph.notices)
    if backend == "torch":
        import torch

        dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise click.UsageError("--device cuda: no CUDA device is available to PyTorch")
        report = time_torch(net_obj, iterations=iterations, warmup=warmup, backward=backward, seed=seed,
                            device=dev, net_label=net)
    else:
        report = time_onnxruntime(net_obj, iterations=iterations, warmup=warmup, seed=seed, device=device,
                                  net_label=net)
    if as_json:
        click.echo(json.dumps(report.to_json(sort=sort), indent=2))
    else:
        click.echo(format_report(report, sort=sort))
