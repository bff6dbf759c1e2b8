"""`convnet init` and `convnet forward`: make weights, run a net on arrays."""
from __future__ import annotations

import json

import click
from convnet_cli.options import (
    apply_precision,
    backend_option,
    handle_errors,
    input_shape_option,
    parse_input_shapes,
    phase_option,
    precision_option,
    print_notices,
)


@click.command("init")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .caffemodel to write.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the same seed gives the same file.")
@phase_option
@input_shape_option
@click.option("--no-calibrate", is_flag=True, help="Leave BatchNorm statistics at zero mean, unit variance.")
@handle_errors
def init(net, output, seed, phase, input_shape, no_calibrate):
    """Write initial weights for NET as a .caffemodel: the net's fillers, or fan-in-scaled Gaussian
    weights and small random biases where it names none; BatchNorm statistics measured on a seeded
    random batch so activations stay of order one."""
    from convnet_io.api import load
    from convnet_io.tools.weights_io import calibrate, unit_batchnorm

    net_obj = load(net, phase=phase.upper(), input_shapes=parse_input_shapes(input_shape), seed=seed)
    print_notices(net_obj.graph.notices)
    calibrated = 0
    if any(n.type == "BatchNorm" for n in net_obj.graph.nodes):
        if no_calibrate:
            unit_batchnorm(net_obj)
        else:
            calibrated = calibrate(net_obj, seed)
    net_obj.save_caffemodel(output)
    total = net_obj.graph.param_count
    click.echo(f"wrote {output}: {len(net_obj.module.caffe_blobs())} layers, {total:,} parameters"
               + (f", {calibrated} BatchNorm layers calibrated" if calibrated else "") + f" (seed {seed})")


@click.command("forward")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel (default: seeded initial weights).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", required=True, help="An input blob.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .npz to write.")
@click.option("--blobs", default=None, help="'all', or comma-separated blob names (default: the net's outputs).")
@phase_option
@click.option("--json", "as_json", is_flag=True, help="Print the written blobs' shapes as JSON.")
@backend_option
@precision_option
@handle_errors
def forward(net, weights, inputs, output, blobs, phase, as_json, backend, precision="fp32", calibration=None):
    """Run NET on .npy inputs and write the requested blobs to an .npz file."""
    from convnet_io.api import load
    from convnet_io.tools.weights_io import read_npy_inputs, save_npz_atomic

    feeds = read_npy_inputs(inputs)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    net_obj = load(net, weights=weights, phase=phase.upper(), input_shapes=shapes, backend=backend)
    print_notices(net_obj.graph.notices)
    apply_precision(net_obj, precision, calibration)
    wanted = None if blobs is None else ("all" if blobs == "all" else [b for b in blobs.split(",") if b])
    out = net_obj.forward(feeds, blobs=wanted)
    save_npz_atomic(output, out)
    summary = {k: list(v.shape) for k, v in out.items()}
    if as_json:
        click.echo(json.dumps({"output": output, "blobs": summary}))
    else:
        click.echo(f"wrote {output}: " + ", ".join(f"{k} {'×'.join(map(str, s)) or 'scalar'}" for k, s in summary.items()))
