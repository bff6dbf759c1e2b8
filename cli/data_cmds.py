"""`convnet convert-imageset` and `convnet compute-mean`: Caffe's dataset tools."""
from __future__ import annotations

import click
from convnet_cli.options import handle_errors


def _parse_resize(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 0)
    try:
        dims = [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    except ValueError:
        dims = []
    if len(dims) != 2 or any(d < 0 for d in dims):
        raise click.BadParameter(f"'{text}' is not a size like 256,256 (height,width)", param_hint="--resize")
    return dims[0], dims[1]


@click.command("convert-imageset")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("list_file", metavar="LIST", type=click.Path(dir_okay=False))
@click.argument("db", metavar="OUT_LMDB", type=click.Path())
@click.option("--resize", metavar="H,W", help="Resize every image to H x W (bilinear, as Caffe's cv::resize).")
@click.option("--gray", is_flag=True, help="Read images as one grey channel.")
@click.option("--encoded", is_flag=True, help="Store the encoded image (file bytes) instead of pixels.")
@click.option("--encode-type", default="", metavar="EXT", help="Re-encode as EXT (jpg, png, ...); implies --encoded.")
@click.option("--shuffle", is_flag=True, help="Shuffle the list before writing.")
@click.option("--seed", default=0, show_default=True, help="Seed of --shuffle.")
@click.option("--check-size", is_flag=True, help="Fail unless every image has the same size.")
@click.option("--backend", type=click.Choice(["lmdb"], case_sensitive=False), default="lmdb", show_default=True,
              help="Database kind (LevelDB is not supported).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def convert_imageset_cmd(root, list_file, db, resize, gray, encoded, encode_type, shuffle, seed, check_size,
                         backend, quiet):
    """Write the images listed in LIST ('path label' lines, paths under ROOT) to a new LMDB of
    Caffe Datums at OUT_LMDB, keys '%08d_path' (Caffe's convert_imageset)."""
    from convnet_io.tools.imageset import convert_imageset

    res = convert_imageset(root, list_file, db, resize=_parse_resize(resize), gray=gray, encoded=encoded,
                           encode_type=encode_type, shuffle=shuffle, seed=seed, check_size=check_size,
                           backend=backend, progress=not quiet)
    what = "encoded images" if (encoded or encode_type) else (
        f"{'x'.join(map(str, res.shape))} images" if res.shape and check_size else "images")
    click.echo(f"wrote {db}: {res.written} {what}"
               + (f"; {len(res.failed)} could not be read and were left out" if res.failed else ""))


@click.command("compute-mean")
@click.argument("db", metavar="LMDB", type=click.Path(exists=False))
@click.argument("output", metavar="MEAN", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["lmdb"], case_sensitive=False), default="lmdb", show_default=True,
              help="Database kind (LevelDB is not supported).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def compute_mean_cmd(db, output, backend, quiet):
    """Write the per-pixel mean of the Datums in LMDB as a 1 x C x H x W .binaryproto (Caffe's
    compute_image_mean) and print the per-channel means."""
    from convnet_io.tools.imageset import compute_image_mean

    res = compute_image_mean(db, output, progress=not quiet)
    c, h, w = res.mean.shape
    click.echo(f"wrote {output}: mean of {res.count} records, 1x{c}x{h}x{w}")
    for i, v in enumerate(res.channel_means):
        click.echo(f"mean_value channel [{i}]: {v:.6g}")
