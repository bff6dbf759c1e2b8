"""Fork prototxt files with fields convnet's caffe.proto lacks: one line naming the place, the field,
the layer and the forks that define it."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from convnet_cli.main import cli

from convnet_io.caffe.prototxt import parse_net_text
from convnet_io.errors import ParseError

SEGNET_BN = """name: "segnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer {
  name: "conv1_1_bn"  # SegNet's own BatchNorm
  type: "BN"
  bottom: "data"
  top: "conv1_1_bn"
  bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } }
}
"""


def test_unknown_fork_param_names_field_layer_type_and_forks(tmp_path):
    path = tmp_path / "segnet.prototxt"
    path.write_text(SEGNET_BN)
    result = CliRunner().invoke(cli, ["build", str(path)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith(f"error: {path}:8:3: unknown field 'bn_param'"), line
    assert "layer 'conv1_1_bn' (type 'BN')" in line
    assert "SegNet" in line and "PSPNet" in line
    assert "Traceback" not in result.output


def test_unknown_field_inside_a_fork_message():
    text = ('layer { name: "mbox" type: "PriorBox" bottom: "a" bottom: "b" top: "p"\n'
            '  prior_box_param { min_size: 30 density: 2 } }\n')
    with pytest.raises(ParseError) as info:
        parse_net_text(text, "fork.prototxt")
    message = str(info.value)
    assert message.startswith("fork.prototxt:2:34:")
    assert "unknown field 'density' in PriorBoxParameter of layer 'mbox' (type 'PriorBox')" in message


def test_v2_fork_param_in_a_v1_layer_is_explained():
    text = 'layers { name: "p" type: POOLING bottom: "d" top: "p"\n  permute_param { order: 0 } }\n'
    with pytest.raises(ParseError) as info:
        parse_net_text(text, "old.prototxt")
    message = str(info.value)
    assert "old.prototxt:2:3:" in message and "'permute_param'" in message
    assert "(type 'POOLING')" in message and "SSD" in message and "V1" in message


def test_unknown_param_of_no_known_fork():
    text = 'layer { name: "x" type: "Mystery" bottom: "d" top: "x" mystery_param { a: 1 } }\n'
    with pytest.raises(ParseError) as info:
        parse_net_text(text, "m.prototxt")
    assert "unknown field 'mystery_param' of layer 'x' (type 'Mystery')" in str(info.value)


def test_braces_in_strings_and_comments_do_not_confuse_the_layer_search():
    text = ('layer { name: "a{" type: "Input" top: "d" }  # layer { type: "Wrong"\n'
            'layer { type: "Region" name: "r}" bottom: "d" top: "r" region_loss_param { } }\n')
    with pytest.raises(ParseError) as info:
        parse_net_text(text, "y.prototxt")
    message = str(info.value)
    assert "of layer 'r}' (type 'Region')" in message and "RegionLoss" in message
