"""The `convnet` command group."""
from __future__ import annotations

import importlib
import os

import click

from convnet_io import __version__
from convnet_io.errors import ConvnetError
from convnet_io.limits import set_memory_budget
from convnet_io.terminal import escape

# Each command's module, imported when the command is run or listed: `convnet build` makes no other
# command's options (`convnet --help` lists every command, so it imports them all).
_COMMANDS = {
    "build": ("build", "build"), "init": ("weights_cmds", "init"), "forward": ("weights_cmds", "forward"),
    "run": ("run_cmd", "run"), "export": ("export_cmd", "export"), "diff": ("diff_cmd", "diff"),
    "train": ("train_cmd", "train"), "plot-log": ("train_cmd", "plot_log"),
    "convert-imageset": ("data_cmds", "convert_imageset_cmd"), "compute-mean": ("data_cmds", "compute_mean_cmd"),
    "time": ("time_cmd", "time_net"),
    # Caffe's tools, pycaffe scripts
    "test": ("pycaffe_cmds", "test_cmd"), "extract-features": ("pycaffe_cmds", "extract_features_cmd"),
    "draw": ("pycaffe_cmds", "draw_cmd"), "pycaffe": ("pycaffe_cmds", "pycaffe_cmd"),
}


class _Group(click.Group):
    """A bad path or value given to a command is one line and exit 2, like every other bad input."""

    def list_commands(self, ctx):
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            module, attr = _COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(f"convnet_cli.{module}"), attr))
        return self.commands.get(cmd_name)

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


def main() -> None:
    cli(prog_name="convnet")


if __name__ == "__main__":
    main()
