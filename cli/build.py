"""`convnet build NET`: parse, check and summarise a net."""
from __future__ import annotations

import json

import click
from convnet_cli.options import caffe2_net_options, handle_errors, input_shape_option, parse_input_shapes, phase_option, print_notices



@click.command("build")
@click.argument("net", required=False, type=click.Path())
@caffe2_net_options()
@phase_option
@input_shape_option
@click.option("--stage", "stages", multiple=True, help="A NetState stage for include/exclude rules (repeatable).")
@click.option("--level", type=int, default=None, help="The NetState level for include/exclude rules.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Also check a .caffemodel against the net.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@handle_errors
def build(net, phase, input_shape, stages, level, weights, as_json):
    """Parse NET (prototxt or Caffe2 listing), infer shapes, print one row per layer and totals."""
    from convnet_io import load_graph  # here, not at import: `convnet --help` reads no net
    from convnet_io.tools.build import format_table, summarize

    graph = load_graph(net, phase=phase.upper(), input_shapes=parse_input_shapes(input_shape),
                       stages=tuple(stages), level=level)
    print_notices(graph.notices)
    summary = summarize(graph, all_rows=as_json)  # a table of 700k layers shows both ends
    if weights:
        from convnet_io.tools.build import check_weights

        report = check_weights(graph, weights)
        print_notices(report.warnings)
        summary["weights"] = {"path": weights, "layers": report.matched, "warnings": report.warnings}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_table(summary))
        if weights:
            click.echo(f"weights: {weights} fits the net ({summary['weights']['layers']} layers with blobs)")
