"""Option parsing shared by commands, and the one place where errors become exit codes."""
from __future__ import annotations

import functools
import os
import sys

import click

from convnet_io.errors import ConvnetError


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
    "--backend", type=click.Choice(["auto", "torch", "onnxruntime"]), default="auto", show_default=True,
    help="What runs the net: auto picks ONNX Runtime for inference where the net exports, else PyTorch.")


def handle_errors(fn):
    """Turn ConvnetError into one line on stderr and exit code 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConvnetError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (SystemExit, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001  (a bug, not bad input: say so, keep the trace on request)
            if os.environ.get("CONVNET_DEBUG"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {e} (set CONVNET_DEBUG=1 for the traceback)", err=True)
            sys.exit(3)

    return wrapper


def print_notices(notices: list[str]) -> None:
    for n in notices:
        click.echo(f"note: {n}", err=True)
