"""`convnet export`: ONNX (checked and validated), TorchScript, torch.export, safetensors."""
from __future__ import annotations

import json

import click
from convnet_cli.options import handle_errors, input_shape_option, parse_input_shapes, print_notices


@click.command("export")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel (default: seeded initial weights).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="Write an ONNX model here.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: %d)." % 17)
@click.option("--static-batch", is_flag=True, help="Fix the batch dimension instead of leaving it dynamic.")
@click.option("--no-check", is_flag=True, help="Skip running the ONNX file in ONNX Runtime against PyTorch.")
@click.option("--torchscript", type=click.Path(dir_okay=False), help="Write a traced TorchScript module here.")
@click.option("--pt2", type=click.Path(dir_okay=False), help="Write a torch.export program (.pt2) here.")
@click.option("--safetensors", type=click.Path(dir_okay=False), help="Write the Caffe blobs as safetensors here.")
@click.option("--rtol", type=float, default=1e-4, show_default=True, help="Tolerance of the ONNX Runtime check.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Execution provider for the check (auto: CUDA when a GPU is present).")
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def export(net, weights, onnx_path, opset, static_batch, no_check, torchscript, pt2, safetensors, rtol, device,
           input_shape, as_json):
    """Export NET (with its weights) to ONNX and other formats. The ONNX file passes onnx.checker and
    shape inference, then runs in ONNX Runtime at batch 1 and 7 against the PyTorch model; exit 1
    when the worst relative error is over --rtol."""
    from convnet_io.api import load
    from convnet_io.tools.export import (
        DEFAULT_OPSET,
        check_onnx,
        export_onnx,
        save_exported_program,
        save_onnx,
        save_safetensors,
        save_torchscript,
        validate_onnx,
    )

    if not any((onnx_path, torchscript, pt2, safetensors)):
        raise click.UsageError("name at least one output: --onnx, --torchscript, --pt2 or --safetensors")
    net_obj = load(net, weights=weights, input_shapes=parse_input_shapes(input_shape))
    print_notices(net_obj.graph.notices)
    result: dict = {"net": net, "outputs": {}}
    exit_code = 0
    if onnx_path:
        model = export_onnx(net_obj.graph, net_obj.blobs(), opset=opset or DEFAULT_OPSET, static_batch=static_batch)
        check_onnx(model)
        save_onnx(model, onnx_path)
        info = {"path": onnx_path, "opset": opset or DEFAULT_OPSET, "checker": "passed",
                "nodes": len(model.graph.node)}
        if not no_check:
            batches = (1,) if static_batch else (1, 7)
            if static_batch:
                batches = (net_obj.graph.shapes[net_obj.graph.inputs[0]][0],)
            v = validate_onnx(net_obj, model, batches=batches, rtol=rtol, device=device)
            info.update(provider=v.provider, batches=v.batches, worst_rel=v.worst_rel, ok=v.ok)
            if not v.ok:
                exit_code = 1
        result["outputs"]["onnx"] = info
    if torchscript:
        save_torchscript(net_obj, torchscript)
        result["outputs"]["torchscript"] = {"path": torchscript}
    if pt2:
        save_exported_program(net_obj, pt2)
        result["outputs"]["pt2"] = {"path": pt2}
    if safetensors:
        save_safetensors(net_obj, safetensors)
        result["outputs"]["safetensors"] = {"path": safetensors}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for kind, info in result["outputs"].items():
            line = f"wrote {info['path']} ({kind}"
            if kind == "onnx":
                line += f", opset {info['opset']}, {info['nodes']} nodes, onnx.checker passed"
            click.echo(line + ")")
            if kind == "onnx" and "provider" in info:
                verdict = "ok" if info["ok"] else f"FAILED (over {rtol:g})"
                click.echo(f"onnxruntime check ({info['provider']}, batch {', '.join(map(str, info['batches']))}): "
                           f"worst relative error {info['worst_rel']:.3e} {verdict}")
    if exit_code:
        raise SystemExit(exit_code)


