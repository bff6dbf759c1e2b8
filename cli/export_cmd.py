"""`convnet export`: ONNX (checked and validated), TorchScript, torch.export, safetensors."""
from __future__ import annotations

import json

import click
from convnet_cli.options import caffe2_net_options, handle_errors, input_shape_option, parse_input_shapes, print_notices


@click.command("export")
@click.argument("net", required=False, type=click.Path())
@caffe2_net_options("export")
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel (default: seeded initial weights).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="Write an ONNX model here.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: %d)." % 17)
@click.option("--static-batch", is_flag=True, help="Fix the batch dimension instead of leaving it dynamic.")
@click.option("--no-check", is_flag=True, help="Skip running the ONNX file in ONNX Runtime against PyTorch.")
@click.option("--torchscript", type=click.Path(dir_okay=False), help="Write a traced TorchScript module here.")
@click.option("--pt2", type=click.Path(dir_okay=False), help="Write a torch.export program (.pt2) here.")
@click.option("--safetensors", type=click.Path(dir_okay=False), help="Write the Caffe blobs as safetensors here.")
@click.option("--rtol", type=float, default=None,
              help="Tolerance of the ONNX Runtime check (default 1e-4; 0.1 with --precision int8).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "int8"]), default="fp32", show_default=True,
              help="int8: the ONNX model quantized by ONNX Runtime's static quantizer (needs --calibration); "
                   "bf16 only on CPUs with AVX512-BF16 or AMX.")
@click.option("--calibration", type=click.Path(dir_okay=False), metavar="NPY",
              help="With --precision int8: preprocessed inputs (an N x C x H x W .npy) to measure activation ranges on.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Execution provider for the check (auto: CUDA when a GPU is present).")
@input_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@handle_errors
def export(net, weights, onnx_path, opset, static_batch, no_check, torchscript, pt2, safetensors, rtol, precision,
           calibration, device,
           input_shape, as_json, caffe2_out=None):
    """Export NET (with its weights) to ONNX and other formats. The ONNX file passes onnx.checker and
    shape inference, then runs in ONNX Runtime at batch 1 and 7 against the PyTorch model; exit 1
    when the worst relative error is over --rtol."""
    # torch is imported only where a torch output or the ONNX Runtime check needs it
    from convnet_io.tools.convert import convert_to_onnx

    if not any((onnx_path, torchscript, pt2, safetensors, caffe2_out)):
        raise click.UsageError("name at least one output: --onnx, --torchscript, --pt2, --safetensors or --caffe2")
    result: dict = {"net": net, "outputs": {}}
    exit_code = 0
    if onnx_path:
        c = convert_to_onnx(net, onnx_path, weights=weights, opset=opset, static_batch=static_batch,
                            input_shapes=parse_input_shapes(input_shape), check=not no_check, rtol=rtol,
                            precision=precision, calibration=calibration,
                            device=device)
        print_notices(c.notices)
        info = {"path": onnx_path, "opset": c.opset, "checker": "passed", "nodes": c.nodes}
        if c.check is not None:
            info.update({k: c.check[k] for k in ("provider", "batches", "worst_rel", "ok", "top1_agreement")
                         if k in c.check})
            if not c.check["ok"]:
                exit_code = 1
        result["outputs"]["onnx"] = info
    if torchscript or pt2 or safetensors:
        from convnet_io.api import load
        from convnet_io.tools.export import save_exported_program, save_safetensors, save_torchscript

        net_obj = load(net, weights=weights, input_shapes=parse_input_shapes(input_shape))
        if not onnx_path:
            print_notices(net_obj.graph.notices)
    if torchscript:
        save_torchscript(net_obj, torchscript)
        result["outputs"]["torchscript"] = {"path": torchscript}
    if pt2:
        save_exported_program(net_obj, pt2)
        result["outputs"]["pt2"] = {"path": pt2}
    if safetensors:
        save_safetensors(net_obj, safetensors)
        result["outputs"]["safetensors"] = {"path": safetensors}
    if caffe2_out:
        from convnet_io.tools.caffe2_tools import export_caffe2

        info = export_caffe2(net, caffe2_out, weights=weights, input_shapes=parse_input_shapes(input_shape))
        print_notices(info.pop("notices"))
        result["outputs"]["caffe2"] = info
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for kind, info in result["outputs"].items():
            line = f"wrote {info['path']} ({kind}"
            if kind == "onnx":
                line += f", opset {info['opset']}, {info['nodes']} nodes, onnx.checker passed"
            click.echo(line + ")")
            if kind == "onnx" and "provider" in info:
                verdict = "ok" if info["ok"] else f"FAILED (over {c.check['rtol']:g})"
                if "top1_agreement" in info:
                    verdict = (f"(reduced precision), top-1 agreement {100 * info['top1_agreement']:.1f}% "
                               + ("ok" if info["ok"] else f"FAILED (under {100 * c.check['min_top1']:.0f}%)"))
                click.echo(f"onnxruntime check ({info['provider']}, batch {', '.join(map(str, info['batches']))}): "
                           f"worst relative error {info['worst_rel']:.3e} {verdict}")
    if exit_code:
        raise SystemExit(exit_code)


