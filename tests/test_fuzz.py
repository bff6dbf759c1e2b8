"""Fuzzing in the suite: a bounded number of mutated cases per reader (``make fuzz`` runs 10,000),
and properties checked by hypothesis. A case passes when the reader succeeds or refuses with
ConvnetError (one line, exit 2 in the CLI); anything else would be an exit 3."""
from __future__ import annotations

import os

import fuzzing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnet_io.terminal import escape, name

CASES = int(os.environ.get("CONVNET_FUZZ_CASES", "12"))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("target", fuzzing.TARGETS, ids=lambda t: t.name)
def test_mutated_inputs_are_refused_with_one_line(target):
    report = fuzzing.run_target(target, CASES, seed=1)
    assert report.cases == CASES
    assert not report.failures, [(f.case, f.kind, f.message) for f in report.failures]


_WORD = st.sampled_from(["name", "layer", "type", "top", "bottom", "convolution_param", "num_output",
                         "kernel_size", "include", "phase", "TEST", "input_shape", "dim", "lr_mult", "param",
                         "bias_term", "true", "false", "force_backward", "input", "pool", "MAX"])
_TOKEN = st.one_of(_WORD, st.sampled_from(["{", "}", ":", ",", ";", "#c\n", "\n", "<", ">", "[", "]"]),
                   st.integers(-2**40, 2**40).map(str), st.floats(allow_nan=True).map(str),
                   st.text(max_size=6).map(lambda s: '"' + s.replace('"', "").replace("\\", "\\\\") + '"'),
                   st.sampled_from(['"a\\n"', "'q'", '"\\x41"', '"\\303\\251"', "0x1f", "010", "1e5", "-0", ".5",
                                    "1f", "inf", "nan"]))


@FAST
@given(st.lists(_TOKEN, max_size=40).map(" ".join))
def test_fast_prototxt_parser_agrees_with_protobuf(text):
    """Wherever the fast path answers, protobuf's parser accepts the text and gives the same message."""
    from google.protobuf import text_format

    from convnet_io.caffe.proto import caffe_pb2
    from convnet_io.caffe.prototxt_fast import parse_fast

    fast = parse_fast(text, caffe_pb2.NetParameter())
    if fast is not None:
        slow = caffe_pb2.NetParameter()
        text_format.Parse(text, slow)
        assert fast.SerializeToString() == slow.SerializeToString()


@FAST
@given(st.text())
def test_escaped_text_has_no_control_characters(text):
    for out in (escape(text), name(text)):
        assert not any(ord(c) < 32 and c not in "\n\t" or 0x7F <= ord(c) < 0xA0 for c in out)
    assert "\n" not in name(text) and "\x1b" not in name(text)


@FAST
@given(st.binary(max_size=200), st.integers(0, 2))
def test_any_bytes_as_a_net_is_built_or_refused(tmp_path_factory, data, where):
    """Random bytes appended to or put in front of a real net: never anything but ConvnetError."""
    seed = fuzzing.net_seeds()[where % len(fuzzing.net_seeds())]
    for case in (data, seed + data, data + seed):
        assert fuzzing.check_case(fuzzing.TARGETS_BY_NAME["prototxt"], case) is None


def test_non_utf8_prototxt_reports_line_and_column(tmp_path):
    from convnet_io.caffe.prototxt import read_net
    from convnet_io.errors import ParseError

    p = tmp_path / "n.prototxt"
    p.write_bytes(b'name: "x"\nlayer { name: "\xc3\xa9t\xff" }\n')
    with pytest.raises(ParseError) as e:
        read_net(p)
    assert (e.value.line, e.value.column) == (2, 18), str(e.value)
    assert str(e.value).startswith(f"{p}:2:18: not UTF-8")


# Cases `make fuzz` found (target, seed, case): each stays fixed.
FOUND = [
    ("image", 0, 1237),  # a 9 x 57046 JPEG header: the resize held 256 x 57046 float64 (4 s, 1.2 GB)
    ("image", 0, 2880),  # 9 x 47628, the same
    ("image", 0, 3030),  # a 9 x 60684 GIF, the same
]


@pytest.mark.parametrize("name, seed, case", FOUND)
def test_cases_found_by_fuzzing_stay_fixed(name, seed, case):
    import time

    target = fuzzing.TARGETS_BY_NAME[name]
    data = fuzzing.case_input(target, seed, case)
    t0 = time.process_time()
    assert fuzzing.check_case(target, data) is None
    assert time.process_time() - t0 < 1.0
