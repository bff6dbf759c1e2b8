"""`convnet diff`: blob-by-blob comparison of two executions of a Caffe model."""
from __future__ import annotations

import json

import click
from convnet_cli.options import caffe2_net_options, handle_errors


@click.command("diff")
@click.argument("a", required=False, type=click.Path())
@click.argument("b", type=click.Path(), required=False)
@caffe2_net_options("diff")
@click.option("--weights", type=click.Path(dir_okay=False), help="Weights of A (and of B unless --weights-b).")
@click.option("--weights-b", type=click.Path(dir_okay=False), help="Weights of B.")
@click.option("--against", type=click.Choice(["torch", "onnxruntime", "opencv", "openvino"]), default="onnxruntime",
              show_default=True, help="Backend to compare the PyTorch model with (when B is not given).")
@click.option("--input", "image", type=click.Path(dir_okay=False), help="An image as input (default: seeded noise).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the input (and of weights when none are given).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Batch size.")
@click.option("--atol", default=1e-5, show_default=True, type=click.FloatRange(min=0), help="Absolute tolerance.")
@click.option("--rtol", default=1e-4, show_default=True, type=click.FloatRange(min=0), help="Tolerance relative to each blob's largest value.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="ONNX Runtime execution provider.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--allow-python-layers", is_flag=True,
              help="Run `type: \"Python\"` layers (imports their python_param module).")
@handle_errors
def diff(a, b, weights, weights_b, against, image, seed, batch, atol, rtol, device, as_json, allow_python_layers):
    """Compare every blob of two runs, in execution order: A in PyTorch against B (another
    definition of the same model) or against --against. A blob agrees when max|a-b| <= atol +
    rtol * max|b|. Exit 0 when all agree, 1 on a mismatch, 2 on bad input."""
    from convnet_io.errors import ConvnetError
    from convnet_io.tools.diff import DiffSetup, Tolerance, format_report, run_diff

    if weights_b and not b:
        raise click.UsageError("--weights-b needs a second definition B")
    for path in (a, b):
        if path and path.endswith((".caffemodel", ".solverstate", ".binaryproto")):
            raise ConvnetError(f"{path} holds weights, not a net definition: pass it with --weights / --weights-b")

    setup = DiffSetup(a=a, b=b, weights=weights, weights_b=weights_b, against=against, image=image, seed=seed,
                      batch=batch, tolerance=Tolerance(atol=atol, rtol=rtol), device=device)
    from convnet_io.pycaffe.python_layer import python_layers_allowed

    with python_layers_allowed(allow_python_layers):  # a Python layer otherwise names the flag
        report = run_diff(setup)
    if as_json:
        click.echo(json.dumps(report, indent=2, allow_nan=False))
    else:
        click.echo(format_report(report, f"{report['a']}  vs  {report['b']}  (batch {batch})"))
    raise SystemExit(0 if report["ok"] else 1)
