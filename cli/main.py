"""The `convnet` command group."""
from __future__ import annotations

import click

from convnet_io import __version__

from .build import build
from .diff_cmd import diff
from .export_cmd import export
from .run_cmd import run
from .weights_cmds import forward, init


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convnet")
def cli():
    """Run, convert and check Caffe models with PyTorch and ONNX."""


for command in (build, init, forward, run, export, diff):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="convnet")


if __name__ == "__main__":
    main()
