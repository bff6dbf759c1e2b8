"""The `convnet` command group."""
from __future__ import annotations

import click

from convnet_io import __version__

from .build import build
from .data_cmds import compute_mean_cmd, convert_imageset_cmd
from .diff_cmd import diff
from .export_cmd import export
from .run_cmd import run
from .time_cmd import time_net
from .train_cmd import plot_log, train
from .weights_cmds import forward, init


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convnet")
def cli():
    """Run, convert and check Caffe models with PyTorch and ONNX."""


for command in (build, init, forward, run, export, diff, train, plot_log, convert_imageset_cmd, compute_mean_cmd, time_net):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="convnet")


if __name__ == "__main__":
    main()
