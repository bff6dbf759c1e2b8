"""Option parsing shared by commands, and the one place where errors become exit codes."""
from __future__ import annotations

import functools
import os
import signal
import sys

import click

from convnet_io.errors import ConvnetError
from convnet_io.paths import check_outputs
from convnet_io.terminal import EscapingStream, escape


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a shape like 1,3,227,227") from None
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"'{text}' is not a shape of positive sizes like 1,3,227,227")
    return dims


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape 1,3,227,227`` (the net's input) or ``--input-shape data=1,3,227,227``."""
    if not values:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, _, dims = v.rpartition("=")
        shapes[name] = parse_shape(dims)
    return shapes


input_shape_option = click.option(
    "--input-shape", "input_shape", multiple=True, metavar="[NAME=]N,C,H,W",
    help="Shape of a net input (repeat for several); needed where the net cannot tell.")
phase_option = click.option(
    "--phase", type=click.Choice(["TRAIN", "TEST"], case_sensitive=False), default="TEST",
    show_default=True, help="Which phase's layers to keep.")


backend_option = click.option(
    "--backend", type=click.Choice(["auto", "torch", "onnxruntime", "openvino"]), default="auto", show_default=True,
    help="What runs the net: auto picks the engine the recorded bench found fastest for the net and batch "
         "size (ONNX Runtime by default) where the net exports, else PyTorch; openvino needs the openvino extra.")


# Parameters that name files a command writes (the rest that name files are its inputs).
OUTPUT_PARAMS = {"output": "-o", "onnx_path": "--onnx", "torchscript": "--torchscript", "pt2": "--pt2",
                 "safetensors": "--safetensors", "log_json": "--log-json", "out": "OUT"}


def _check_paths(kwargs: dict) -> None:
    """Refuse an output that is a directory or one of the command's inputs, before any work."""
    outputs = {flag: kwargs.get(name) for name, flag in OUTPUT_PARAMS.items() if isinstance(kwargs.get(name), str)}
    if not outputs:
        return
    inputs: list[str] = []
    for name, value in kwargs.items():
        if name in OUTPUT_PARAMS:
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, str) and v:
                inputs.append(v)
                if "=" in v:  # NAME=FILE, PHASE:LAYER=PATH
                    inputs.append(v.rpartition("=")[2])
    check_outputs(outputs, [i for i in inputs if os.path.exists(i)])


def _one_line(text: object) -> str:
    return escape(str(text).strip(), newlines=False)


def _raise_exit(signum, frame):  # noqa: ARG001
    # SIGTERM/SIGHUP end the command through the normal unwinding, so temporary files go away.
    raise SystemExit(128 + signum)


def precision_option(fn):
    """``--precision fp32|bf16|int8`` and ``--calibration NPY`` (the inputs int8 measures ranges on)."""
    fn = click.option("--calibration", type=click.Path(dir_okay=False), metavar="NPY",
                      help="With --precision int8: preprocessed inputs (N x C x H x W .npy) to calibrate on.")(fn)
    return click.option("--precision", type=click.Choice(["fp32", "bf16", "int8"]), default="fp32", show_default=True,
                        help="Opt-in reduced precision: int8 (ONNX Runtime's quantizer, needs --calibration) or "
                             "bf16 (OpenVINO, CPUs with AVX512-BF16/AMX); measure its cost with convnet diff.")(fn)


def apply_precision(net, precision: str, calibration: str | None) -> None:
    """Switch a loaded net to ``precision`` (fp32 leaves it as it is)."""
    if precision == "fp32":
        return
    data = None
    if calibration:
        from convnet_io.tools.precision import load_calibration

        data = load_calibration(calibration, net.graph.shapes[net.inputs[0]])
    elif precision == "int8":
        raise ConvnetError("--precision int8 needs --calibration NPY: inputs to measure activation ranges on")
    net.set_precision(precision, calibration=data)


def handle_errors(fn):
    """Turn ConvnetError (and no space, no permission, no memory) into one line on stderr and exit
    code 2; never a traceback. Output escapes control characters from names in files."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = EscapingStream(out), EscapingStream(err)
        # only signals left at their default (nohup's ignored SIGHUP stays ignored)
        previous = {s: h for s in (signal.SIGTERM, signal.SIGHUP) if (h := signal.getsignal(s)) == signal.SIG_DFL}
        try:
            for s in previous:
                signal.signal(s, _raise_exit)
        except ValueError:  # not the main thread: leave the signals alone
            previous = {}
        try:
            _check_paths(kwargs)
            return fn(*args, **kwargs)
        except ConvnetError as e:
            click.echo(f"error: {_one_line(e)}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (SystemExit, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as e:  # no space, no permission, a read-only disk: the user's to fix
            ctx = click.get_current_context(silent=True)
            where = e.filename or (ctx.info_name if ctx else None) or "convnet"
            click.echo(f"error: {_one_line(where)}: {_one_line(e.strerror or e)}", err=True)
            sys.exit(2)
        except MemoryError:
            click.echo("error: out of memory (--max-memory sets the budget checked before allocating)", err=True)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001  (a bug, not bad input: say so, keep the trace on request)
            if os.environ.get("CONVNET_DEBUG"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {_one_line(e)} (set CONVNET_DEBUG=1 for the traceback)",
                       err=True)
            sys.exit(3)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            sys.stdout, sys.stderr = out, err

    return wrapper


def print_notices(notices: list[str]) -> None:
    for n in notices:
        click.echo(f"note: {n}", err=True)


def caffe2_net_options(mode: str = "net"):
    """``--caffe2 PREDICT_NET --init INIT_NET``: a Caffe2 NetDef pair in place of NET (a folder
    holding both works as NET itself). ``mode``: "net" (the NET argument; a positional given as
    well is the first IMAGE of `run`), "export" (with NET given, --caffe2 names the folder to
    write instead: passed on as ``caffe2_out``), "diff" (the pair is A, a positional is B), "train"
    (the pair's weights are where fine-tuning starts: passed on as ``weights``)."""

    import inspect

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, caffe2_net=None, caffe2_init=None, caffe2_input_shape=(), **kwargs):
            from convnet_io.api.loading import caffe2_net as named_pair
            from convnet_io.api.loading import is_caffe2_net

            shapes = parse_input_shapes(caffe2_input_shape)

            def pair_of(predict, init=None):
                return named_pair(predict, init, shapes)

            if shapes:  # for a NetDef without value_info.json, in commands that take no --input-shape
                for key in ("net", "a", "b"):
                    if kwargs.get(key) and is_caffe2_net(kwargs[key]):
                        kwargs[key] = pair_of(kwargs[key])

            if mode == "export":
                kwargs["caffe2_out"] = None
                if caffe2_net and kwargs.get("net"):
                    if caffe2_init:
                        raise click.UsageError("--init goes with an input --caffe2 (no NET): with NET, --caffe2 "
                                               "names the folder to write")
                    kwargs["caffe2_out"], caffe2_net = caffe2_net, None
            if caffe2_init and not caffe2_net:
                raise click.UsageError("--init needs --caffe2 PREDICT_NET")
            if not caffe2_net:
                if mode in ("net", "export") and not kwargs.get("net"):
                    raise click.UsageError("missing NET (a net file or folder, or --caffe2 PREDICT_NET --init INIT_NET)")
                if mode == "diff" and not kwargs.get("a"):
                    raise click.UsageError("missing A (a net file or folder, or --caffe2 PREDICT_NET --init INIT_NET)")
                _check_run_weights(kwargs)
                return fn(*args, **kwargs)
            pair = pair_of(caffe2_net, caffe2_init)
            if mode == "diff":
                if kwargs.get("b"):
                    raise click.UsageError("with --caffe2 (net A), give at most one positional net (B)")
                kwargs["a"], kwargs["b"] = pair, kwargs.get("a")
            elif mode == "train":
                if kwargs.get("weights"):
                    raise click.UsageError("give --weights or --caffe2/--init, not both")
                kwargs["weights"] = pair_weights_file(pair)
            else:
                if kwargs.get("net"):
                    if "images" not in kwargs:
                        raise click.UsageError("give NET or --caffe2, not both")
                    kwargs["images"] = (kwargs["net"], *kwargs["images"])
                kwargs["net"] = pair
            _check_run_weights(kwargs)
            return fn(*args, **kwargs)

        if "input_shape" not in inspect.signature(fn).parameters:
            wrapper = click.option("--input-shape", "caffe2_input_shape", multiple=True, metavar="[NAME=]N,C,H,W",
                                   help="Input shape of a Caffe2 net that has no value_info.json.")(wrapper)
        wrapper = click.option("--init", "caffe2_init", type=click.Path(exists=True, dir_okay=False),
                               metavar="INIT_NET", help="The init net (weights) of --caffe2 (default: beside it).")(wrapper)
        help_text = ("Read a Caffe2 NetDef: predict_net.pb or .pbtxt (with --init); with NET given, the folder "
                     "to write predict_net.pb, init_net.pb and value_info.json to." if mode == "export" else
                     "Read a Caffe2 NetDef: predict_net.pb or .pbtxt (with --init) in place of NET.")
        return click.option("--caffe2", "caffe2_net", type=click.Path(), metavar="PREDICT_NET|OUT_DIR"
                            if mode == "export" else "PREDICT_NET", help=help_text)(wrapper)

    return decorate


def _check_run_weights(kwargs: dict) -> None:
    """`run` classifies: it needs IMAGEs and trained weights (a NetDef pair carries its own)."""
    if "images" not in kwargs:
        return
    if not kwargs["images"]:
        raise click.UsageError("missing IMAGE...")
    if not kwargs.get("weights"):
        from convnet_io.api.loading import is_caffe2_net

        if not is_caffe2_net(kwargs["net"]):
            raise click.UsageError("missing --weights (a .caffemodel; a Caffe2 NetDef pair carries its own)")


def pair_weights_file(pair) -> str:
    """A NetDef pair's weights as a temporary .caffemodel, removed when the process ends."""
    import atexit
    import tempfile

    from convnet_io.tools.caffe2_tools import netdef_as_caffemodel

    fd, path = tempfile.mkstemp(prefix="convnet-caffe2-", suffix=".caffemodel")
    os.close(fd)
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return netdef_as_caffemodel(pair, path)
