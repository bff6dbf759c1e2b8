"""`convnet init` and `convnet forward`: make weights, run a net on arrays."""
from __future__ import annotations

import json

import click
import numpy as np

from convnet_io.errors import ConvnetError

from .options import backend_option, handle_errors, input_shape_option, parse_input_shapes, phase_option, print_notices


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


def unit_batchnorm(net_obj) -> None:
    """BatchNorm statistics of zero mean and unit variance (scale factor 1)."""
    import torch

    for node in net_obj.graph.nodes:
        if node.type == "BatchNorm":
            mean, var, factor = net_obj.module.layer(node.name).caffe_blobs()
            with torch.no_grad():
                mean.zero_()
                var.fill_(1.0)
                factor.fill_(1.0)


def calibrate(net_obj, seed: int) -> int:
    import torch

    from convnet_io.torch_model.calibrate import calibrate_batchnorm

    gen = torch.Generator().manual_seed(seed)
    feeds = {v: torch.randn(net_obj.graph.shapes[v], generator=gen) for v in net_obj.graph.inputs}
    n = calibrate_batchnorm(net_obj.module, feeds)
    # BatchNorm with stored statistics divides by the scale factor: keep it 1.
    for node in net_obj.graph.nodes:
        if node.type == "BatchNorm":
            with torch.no_grad():
                net_obj.module.layer(node.name).caffe_blobs()[2].fill_(1.0)
    return n


def _parse_inputs(items: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise click.BadParameter(f"'{item}' should be NAME=FILE.npy", param_hint="--input")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConvnetError(f"{path}: cannot read as .npy: {e}") from None
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) \
                or np.iscomplexobj(array):
            raise ConvnetError(f"{path}: not a .npy array of real numbers")
        feeds[name] = array
    return feeds


def save_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    from convnet_io.atomic import atomic_output

    import zipfile

    # np.savez(**arrays) would take blobs named "file" or "allow_pickle" as its own arguments.
    with atomic_output(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)


@click.command("forward")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel (default: seeded initial weights).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", required=True, help="An input blob.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .npz to write.")
@click.option("--blobs", default=None, help="'all', or comma-separated blob names (default: the net's outputs).")
@phase_option
@click.option("--json", "as_json", is_flag=True, help="Print the written blobs' shapes as JSON.")
@backend_option
@handle_errors
def forward(net, weights, inputs, output, blobs, phase, as_json, backend):
    """Run NET on .npy inputs and write the requested blobs to an .npz file."""
    from convnet_io.api import load

    feeds = _parse_inputs(inputs)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    net_obj = load(net, weights=weights, phase=phase.upper(), input_shapes=shapes, backend=backend)
    print_notices(net_obj.graph.notices)
    wanted = None if blobs is None else ("all" if blobs == "all" else [b for b in blobs.split(",") if b])
    out = net_obj.forward(feeds, blobs=wanted)
    save_npz_atomic(output, out)
    summary = {k: list(v.shape) for k, v in out.items()}
    if as_json:
        click.echo(json.dumps({"output": output, "blobs": summary}))
    else:
        click.echo(f"wrote {output}: " + ", ".join(f"{k} {'×'.join(map(str, s)) or 'scalar'}" for k, s in summary.items()))
