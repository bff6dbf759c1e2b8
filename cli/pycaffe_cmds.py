"""Caffe's own tools as commands: `convnet test`, `convnet extract-features`, `convnet draw`, and
`convnet pycaffe SCRIPT.py` (a pycaffe script run on convnet)."""
from __future__ import annotations

import json

import click
from convnet_cli.options import handle_errors, print_notices


@click.command("test")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="The net definition (with data layers).")
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel (layers it lacks keep their fillers).")
@click.option("--iterations", default=50, show_default=True, type=click.IntRange(min=1), help="Batches to run.")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"], case_sensitive=False), default="TEST", show_default=True)
@click.option("--stage", "stages", multiple=True, help="A NetState stage (repeatable).")
@click.option("--level", type=int, default=None, help="The NetState level.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Data worker processes.")
@click.option("--verbose", is_flag=True, help="Also print each batch's outputs, as Caffe logs them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def test_cmd(model, weights, iterations, phase, stages, level, workers, verbose, as_json):
    """Caffe's `caffe test`: run the net's TEST phase over its data layers for --iterations batches
    and print the loss and each output (accuracy, loss) averaged over them."""
    import sys

    from convnet_io.tools.net_test import format_report, run_test

    log = (lambda line: click.echo(line, err=True)) if verbose else None
    report = run_test(model, weights, iterations, phase.upper(), tuple(stages), level, workers,
                      progress=sys.stderr.isatty() and not as_json, log=log)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    print_notices(report.notices)
    click.echo(format_report(report))


@click.command("extract-features")
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("blobs")
@click.argument("out")
@click.option("--batches", default=1, show_default=True, type=click.IntRange(min=1), help="Mini-batches to run.")
@click.option("--format", "fmt", type=click.Choice(["lmdb", "npy", "h5"]), default="lmdb", show_default=True,
              help="lmdb: float Datums keyed %010d (Caffe's layout); npy / h5: one N x dims array.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Data worker processes.")
@handle_errors
def extract_features_cmd(net, weights, blobs, out, batches, fmt, workers):
    """Caffe's `extract_features`: run NET's TEST phase with WEIGHTS over its data layers and save
    BLOBS (comma-separated) item by item to OUT (comma-separated, one per blob)."""
    from convnet_io.tools.extract_features import extract_features

    shapes = extract_features(net, weights, [b for b in blobs.split(",") if b],
                              [o for o in out.split(",") if o], batches, fmt, workers)
    for path, shape in shapes.items():
        click.echo(f"{path}: {' x '.join(str(d) for d in shape)}")


@click.command("draw")
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--rankdir", type=click.Choice(["LR", "RL", "TB", "BT"]), default="LR", show_default=True,
              help="Direction of the layout.")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST", "ALL"], case_sensitive=False), default="ALL",
              show_default=True, help="Which phase's layers to draw.")
@click.option("--display-lrm", is_flag=True, help="Show the learning rate multipliers.")
@click.option("--no-shapes", is_flag=True, help="Label edges as Caffe's draw_net.py does (no inferred shapes).")
@handle_errors
def draw_cmd(net, out, rankdir, phase, display_lrm, no_shapes):
    """Draw NET to OUT (.svg, .png, .pdf, or .dot for the graphviz text) as Caffe's draw_net.py
    does, with each top's shape on its edge. Needs graphviz's `dot` except for .dot."""
    from convnet_io.tools.draw import draw_file

    path = draw_file(net, out, rankdir, None if phase.upper() == "ALL" else phase, display_lrm, not no_shapes)
    click.echo(f"wrote {path}")


@click.command("pycaffe", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--allow-python-layers", is_flag=True,
              help="Let nets the script loads run `type: \"Python\"` layers (imports their modules).")
@handle_errors
def pycaffe_cmd(script, args, allow_python_layers):
    """Run a pycaffe SCRIPT on convnet: its `import caffe` gets convnet_io.pycaffe; ARGS go to it."""
    from convnet_io.pycaffe.alias import run_script

    run_script(script, args, allow_python_layers=allow_python_layers)
