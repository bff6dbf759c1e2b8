"""`convnet run`: classify images with a net, Caffe-style preprocessing."""
from __future__ import annotations

import json
import sys

import click
from convnet_cli.options import (
    apply_precision,
    backend_option,
    caffe2_net_options,
    handle_errors,
    precision_option,
    print_notices,
)


def _emit(text: str, err: bool = False) -> None:
    """Echo a line without tearing a progress bar drawn on stderr."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        click.echo(text, err=err)


def _detect(net, images, mean, labels, threshold, scale, draw_to, as_json):
    """`convnet run --detect`: the boxes of an SSD net, listed (and drawn with --draw)."""
    from convnet_io.tools.detect import detect, draw, drawn_path

    results = detect(net, images, mean=mean, scale=scale, threshold=threshold, labels=labels)
    for r in results:
        if not r.ok:
            _emit(f"error: {r.path}: {r.error}", err=True)
            continue
        if draw_to:
            draw(r.path, r.detections, drawn_path(draw_to, r.path, len(results) > 1))
        if not as_json:
            lines = [f"{r.path} ({r.size[0]} x {r.size[1]}): {len(r.detections)} boxes"]
            lines += [f"  {d.score:.4f}  {d.name if d.name is not None else d.label}  "
                      + " ".join(f"{v:.1f}" for v in d.box) for d in r.detections]
            _emit("\n".join(lines))
    if as_json:
        click.echo(json.dumps({"images": [r.to_json() for r in results if r.ok],
                               "errors": [{"path": r.path, "error": r.error} for r in results if not r.ok]},
                              indent=2))
    if any(not r.ok for r in results):
        sys.exit(2)


def _start_decoding(net, images, mean, oversample, batch_size, workers):
    """Start decoding the image files from the net's graph alone, so that they decode while the
    weights load and the engine compiles; None where that cannot start (the load reports why)."""
    if len(images) < 2:
        return None
    from convnet_io.api import load_graph
    from convnet_io.tools.classify import start_prefetch

    try:
        return start_prefetch(load_graph(net), images, mean=mean, oversample=oversample, batch_size=batch_size,
                              workers=workers)
    except Exception:  # noqa: BLE001 - the net's own load below gives the error in its words
        return None


@click.command("run")
@click.argument("net", required=False, type=click.Path())
@click.argument("images", nargs=-1, metavar="IMAGE...")
@caffe2_net_options()
@click.option("--weights", type=click.Path(dir_okay=False), help="The .caffemodel to use.")
@click.option("--mean", "mean_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Mean image, .npy or .binaryproto, C x H x W in BGR order: subtracted whole when it "
                   "has the crop's size, else averaged to one value per channel (as Caffe's classify.py).")
@click.option("--mean-value", metavar="B,G,R", help="Per-channel mean to subtract, e.g. 104,117,123.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Class names, one a line (synset_words.txt style); default: class indices.")
@click.option("--oversample", is_flag=True,
              help="Average the 10 crops (corners, centre and their mirrors) instead of the centre crop.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes to report per image.")
@click.option("--detect", is_flag=True,
              help="SSD nets: list the boxes of the DetectionOutput layer (the image is resized to the "
                   "input, not cropped).")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="With --detect: the lowest score listed.")
@click.option("--scale", "input_scale", default=1.0, show_default=True, type=float,
              help="With --detect: multiply the mean-subtracted input by this (MobileNet-SSD: 0.007843).")
@click.option("--draw", "draw_to", type=click.Path(), metavar="OUT",
              help="With --detect: write each image with its boxes to OUT (a folder for several images).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass (x10 crops with --oversample).")
@click.option("--workers", default=None, type=click.IntRange(min=0), metavar="N",
              help="Threads decoding and preprocessing images ahead of the net (0: none; default: one per "
                   "four cores, at least one).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr for more than a batch of images (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with all results.")
@backend_option
@precision_option
@handle_errors
def run(net, images, weights, mean_file, mean_value, labels_file, oversample, top_k, batch_size, progress, as_json,
        backend, detect=False, threshold=0.5, input_scale=1.0, draw_to=None, precision="fp32", calibration=None,
        workers=None):
    """Classify IMAGE files with NET and its --weights: each image is resized to 256x256, centre
    cropped (or cut into 10 crops) to the net's input size, scaled to 0..255 BGR and mean
    subtracted, as Caffe's classify.py does; prints each image's top-k classes."""
    from convnet_io.api import load
    from convnet_io.tools.classify import iter_classify, load_labels
    from convnet_io.tools.engine_net import keep_freed_memory, load_for_inference
    from convnet_io.tools.preprocess import load_mean, parse_mean_value

    if mean_file and mean_value:
        raise click.UsageError("give --mean or --mean-value, not both")
    mean = load_mean(mean_file) if mean_file else parse_mean_value(mean_value) if mean_value else None
    labels = load_labels(labels_file) if labels_file else None
    early = None if detect else _start_decoding(net, list(images), mean, oversample, batch_size, workers)
    try:
        if detect:
            net_obj = load(net, weights=weights, backend=backend)
        else:  # the engines' export straight from the weights file, torch only if something needs it
            keep_freed_memory()
            net_obj = load_for_inference(net, weights=weights, backend=backend, precision=precision)
    except BaseException:
        if early is not None:
            early.close()
        raise
    print_notices(net_obj.graph.notices)
    apply_precision(net_obj, precision, calibration)
    if mean is None:
        click.echo("note: no --mean or --mean-value: pixel values are not mean-centred", err=True)
    if progress is None:
        progress = sys.stderr.isatty()
    if detect:
        return _detect(net_obj, list(images), mean, labels, threshold, input_scale, draw_to, as_json)

    done, errors = [], []
    results = iter_classify(net_obj, list(images), mean=mean, oversample=oversample, top_k=top_k,
                            batch_size=batch_size, labels=labels, progress=progress, skip_errors=True,
                            workers=workers, prefetched=early)
    for r in results:
        if not r.ok:
            errors.append({"path": r.path, "error": r.error})
            _emit(f"error: {r.path}: {r.error}", err=True)
            continue
        done.append(r)
        if not as_json:
            lines = [r.path] + [f"  {p.prob:.4f}  {p.label if p.label is not None else p.index}"
                                for p in r.top_k]
            _emit("\n".join(lines))
    if as_json:
        click.echo(json.dumps({"images": [r.to_json() for r in done], "errors": errors}, indent=2))
    if errors:
        sys.exit(2)  # bad input, as everywhere: the good images were still classified above
