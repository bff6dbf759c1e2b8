"""The `convnet` command group."""
from __future__ import annotations

import click
from convnet_cli.build import build
from convnet_cli.data_cmds import compute_mean_cmd, convert_imageset_cmd
from convnet_cli.diff_cmd import diff
from convnet_cli.export_cmd import export
from convnet_cli.run_cmd import run
from convnet_cli.time_cmd import time_net
from convnet_cli.train_cmd import plot_log, train
from convnet_cli.weights_cmds import forward, init

from convnet_io import __version__


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
