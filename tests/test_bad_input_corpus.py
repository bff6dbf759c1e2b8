"""Every command over a corpus of bad inputs: never exit 3, never a traceback, never a raw control
character on the terminal. (Exit 1 is a verdict — diff's mismatch, export's tolerance — so only
exit 3, the internal-error code, is the failure here.)"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from helpers import input_layer

from convnet_io import limits

RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ESC_NAME = "r\x1b]0;title\x07\x1b[31m"

TINY = input_layer((1, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 2 kernel_size: 3 } }
"""


def _corpus(d: Path) -> dict[str, Path]:
    files = {
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "not_utf8": b'name: "x"\nlayer { name: "\xff\xfe" }\n',
        "escape_names": (f'input: "d{ESC_NAME}" input_shape {{ dim: 1 dim: 3 }}\n'
                         f'layer {{ name: "{ESC_NAME}" type: "ReLU{ESC_NAME}" bottom: "d{ESC_NAME}" top: "y" }}\n'
                         f'layer {{ name: "z" type: "ReLU" bottom: "y" top: "z" relu_param {{ {ESC_NAME}: 1 }} }}\n').encode(),
        "stride0": (input_layer((1, 3, 8, 8)) + 'layer { name: "c" type: "Deconvolution" bottom: "data" top: "c" '
                    'convolution_param { num_output: 2 kernel_size: 3 stride: 0 } }').encode(),
        "huge": (input_layer((1, 100000)) + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                 'inner_product_param { num_output: 100000000 } }').encode(),
        "truncated": TINY.encode()[:70],
        "big_text": b"#" * 5000,
        "image_header_bomb": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xff\x00\x00\xff\xff\x08\x02\x00\x00\x00",
    }
    out = {}
    for name, data in files.items():
        p = d / f"{name}.prototxt"
        p.write_bytes(data)
        out[name] = p
    out["missing"] = d / "missing.prototxt"
    out["directory"] = d / "a_directory"
    out["directory"].mkdir()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    good = d / "good.prototxt"
    good.write_text(TINY)
    assert CliRunner().invoke(cli, ["init", str(good), "-o", str(d / "good.caffemodel")]).exit_code == 0
    np.save(d / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    return d, _corpus(d)


def _commands(d: Path, bad: Path) -> list[list[str]]:
    good, w, out = d / "good.prototxt", d / "good.caffemodel", d / "out"
    b = str(bad)
    return [
        ["build", b], ["build", str(good), "--weights", b],
        ["init", b, "-o", f"{out}.caffemodel"],
        ["forward", b, "--input", f"data={d / 'x.npy'}", "-o", f"{out}.npz"],
        ["forward", str(good), "--input", f"data={b}", "-o", f"{out}.npz"],
        ["run", b, "--weights", str(w), "--mean-value", "0,0,0", b],
        ["run", str(good), "--weights", str(w), "--mean-value", "0,0,0", b],
        ["export", b, "--onnx", f"{out}.onnx", "--no-check"],
        ["export", str(good), "--weights", b, "--onnx", f"{out}.onnx", "--no-check"],
        ["diff", b, "--against", "torch"], ["diff", str(good), b],
        ["time", b, "--iterations", "1", "--warmup", "0"],
        ["train", "--solver", b, "--workers", "0"],
        ["compute-mean", b, f"{out}.binaryproto"],
        ["convert-imageset", str(d), b, f"{out}_lmdb"],
        ["plot-log", b, "-o", f"{out}.png"],
        ["draw", b, f"{out}.svg"], ["draw", str(good), str(good)],
        ["test", "--model", b, "--weights", str(w), "--iterations", "1"],
        ["extract-features", b, str(w), "conv1", f"{out}_features"],
        ["extract-features", str(good), b, "conv1", f"{out}_features"],
    ]


@pytest.mark.parametrize("bad", ["empty", "garbage", "not_utf8", "escape_names", "stride0", "huge", "truncated",
                                 "big_text", "image_header_bomb", "missing", "directory"])
def test_every_command_refuses_bad_input_in_one_clean_line(corpus, bad, monkeypatch):
    d, files = corpus
    monkeypatch.setattr(limits, "MAX_TEXT_BYTES", 4096)  # "big_text" stands for /dev/zero
    monkeypatch.setenv("CONVNET_MAX_MEMORY", "256M")
    for args in _commands(d, files[bad]):
        r = CliRunner().invoke(cli, args)
        output = r.stdout + r.stderr
        assert r.exit_code != 3, (args, output)
        assert "Traceback" not in output, (args, output)
        assert not RAW_CONTROL.search(output.replace("\n", "").replace("\t", "")), (args, output)
        if r.exit_code == 2:
            errors = [line for line in r.stderr.splitlines() if line.startswith(("error:", "Error:"))]
            assert errors, (args, output)
