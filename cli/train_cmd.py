"""`convnet train` and `convnet plot-log`."""
from __future__ import annotations

import json

import click
from convnet_cli.options import caffe2_net_options, handle_errors


def _sources(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, path = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{v}' should be [PHASE:]LAYER=PATH or PHASE=PATH", param_hint="--data")
        out[key] = path
    return out


@click.command("train")
@click.option("--solver", required=True, type=click.Path(dir_okay=False), help="A Caffe solver.prototxt.")
@click.option("--net", type=click.Path(dir_okay=False), help="The train/test net (overrides the solver's).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Fine-tune from a .caffemodel (layers matched by name).")
@caffe2_net_options("train")
@click.option("--snapshot", "resume", type=click.Path(dir_okay=False), help="Resume from a .solverstate.")
@click.option("--max-iter", type=int, help="Override max_iter.")
@click.option("--base-lr", type=float, help="Override base_lr.")
@click.option("--batch-size", type=int, help="Override the data layers' batch_size (per process).")
@click.option("--test-interval", type=int, help="Override test_interval (0 disables testing).")
@click.option("--test-iter", type=int, help="Override test_iter.")
@click.option("--snapshot-prefix", help="Override snapshot_prefix.")
@click.option("--snapshot-every", type=int, help="Override snapshot (iterations between snapshots).")
@click.option("--data", "data", multiple=True, metavar="[PHASE:]LAYER=PATH",
              help="Data source for a data layer (TRAIN=PATH / TEST=PATH: every data layer of that phase).")
@click.option("--mean-file", type=click.Path(dir_okay=False), help="Override transform_param.mean_file.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Processes (DistributedDataParallel: gloo on CPU, NCCL on GPUs); batch_size is per process.")
@click.option("--workers", type=int, default=2, show_default=True, help="Data loading processes per training process.")
@click.option("--seed", type=int, help="Override random_seed.")
@click.option("--log-json", type=click.Path(dir_okay=False), help="Write metrics here (JSON lines; .csv for CSV).")
@click.option("--skip-bad-data", is_flag=True, help="Skip (and count) unreadable records instead of stopping.")
@click.option("--pca-lighting", is_flag=True,
              help="The AlexNet paper's PCA colour augmentation (sigma 0.1) at TRAIN; not part of Caffe.")
@click.option("--progress/--no-progress", default=False, help="Show a progress bar.")
@click.option("--allow-python-layers", is_flag=True,
              help="Run `type: \"Python\"` layers (imports their python_param module; one process).")
@handle_errors
def train(solver, net, weights, resume, max_iter, base_lr, batch_size, test_interval, test_iter, snapshot_prefix,
          snapshot_every, data, mean_file, device, nproc, workers, seed, log_json, skip_bad_data, pca_lighting,
          progress, allow_python_layers):
    """Train with a Caffe solver: Caffe's update rules, schedules, test phases and snapshots."""
    from convnet_io.tools.training import TrainOptions, run_training

    opts = TrainOptions(solver=solver, net=net, weights=weights, resume=resume, max_iter=max_iter, base_lr=base_lr,
                        batch_size=batch_size, test_interval=test_interval, test_iter=test_iter,
                        snapshot_prefix=snapshot_prefix, snapshot_every=snapshot_every, sources=_sources(data),
                        mean_file=mean_file, device=device, workers=workers, seed=seed, log_json=log_json,
                        skip_bad_data=skip_bad_data, pca_lighting=pca_lighting, progress=progress)
    from convnet_io.pycaffe.python_layer import python_layers_allowed

    if allow_python_layers and nproc > 1:
        raise click.UsageError("--allow-python-layers trains in one process (--nproc 1)")
    with python_layers_allowed(allow_python_layers):  # a Python layer otherwise names the flag
        result = run_training(opts, nproc=nproc)
    if result:
        click.echo(f"trained {result['iterations']} iterations in {result['seconds']:.1f} s "
                   f"({result['images_per_s']:.1f} images/s)"
                   + (f"; last test: {json.dumps(result['test'])}" if result.get("test") else ""))


@click.command("plot-log")
@click.argument("metrics", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The PNG to write.")
@click.option("--title", default="", help="Plot title.")
@handle_errors
def plot_log(metrics, output, title):
    """Plot a `convnet train --log-json` metrics file: loss and accuracy against iterations."""
    from convnet_io.errors import ConvnetError
    from convnet_io.tools.training import plot_metrics, read_metrics

    try:
        records = read_metrics(metrics)
    except (ValueError, KeyError) as e:
        raise ConvnetError(f"{metrics}: not a convnet metrics file: {e}") from None
    if not records:
        raise ConvnetError(f"{metrics}: no records")
    plot_metrics(records, output, title=title)
    click.echo(f"wrote {output}")
