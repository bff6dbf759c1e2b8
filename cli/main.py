"""The `convnet` command group."""
from __future__ import annotations

import os

import click
from convnet_cli.build import build
from convnet_cli.data_cmds import compute_mean_cmd, convert_imageset_cmd
from convnet_cli.diff_cmd import diff
from convnet_cli.export_cmd import export
from convnet_cli.pycaffe_cmds import draw_cmd, extract_features_cmd, pycaffe_cmd, test_cmd
from convnet_cli.run_cmd import run
from convnet_cli.time_cmd import time_net
from convnet_cli.train_cmd import plot_log, train
from convnet_cli.weights_cmds import forward, init

from convnet_io import __version__
from convnet_io.errors import ConvnetError
from convnet_io.limits import set_memory_budget
from convnet_io.terminal import escape


class _Group(click.Group):
    """A bad path or value given to a command is one line and exit 2, like every other bad input."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.BadParameter as e:
            raise OneLineUsageError(e.format_message()) from None


class OneLineUsageError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {escape(self.format_message(), newlines=False)}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="convnet")
@click.option("--max-memory", metavar="SIZE", default=None,
              help="Memory budget checked before allocating blobs, weights or images (e.g. 8G; "
                   "default: half the machine's memory).")
def cli(max_memory):
    """Run, convert and check Caffe models with PyTorch and ONNX."""
    if max_memory:
        try:
            set_memory_budget(max_memory)
        except ConvnetError as e:
            raise OneLineUsageError(str(e)) from None
        os.environ["CONVNET_MAX_MEMORY"] = max_memory  # worker processes keep the same budget


for command in (build, init, forward, run, export, diff, train, plot_log, convert_imageset_cmd, compute_mean_cmd, time_net):
    cli.add_command(command)
for command in (test_cmd, extract_features_cmd, draw_cmd, pycaffe_cmd):  # Caffe's tools, pycaffe scripts
    cli.add_command(command)


def main() -> None:
    cli(prog_name="convnet")


if __name__ == "__main__":
    main()
