"""The comparator (convnet_io.runtimes.compare) on hand-made arrays: statistics, tolerance,
first divergence, skipped blobs, report text and JSON."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from convnet_io.runtimes.compare import Tolerance, compare_blob, compare_runs, format_report

TOL = Tolerance()  # atol 1e-5, rtol 1e-4


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json_roundtrip(obj):
    """json.dumps as RFC 8259 allows it (no NaN / Infinity), parsed back the same way."""
    text = json.dumps(obj, allow_nan=False)
    return json.loads(text, parse_constant=_reject_constant)


# ---------------------------------------------------------------------------------------------
# compare_blob
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identical_arrays_agree_with_zero_error(dtype):
    a = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(dtype)
    r = compare_blob("x", a, a.copy(), TOL)
    assert r.ok and r.status == "ok"
    assert r.name == "x" and r.shape == [2, 3, 4, 5]
    assert r.max_abs == 0.0 and r.max_rel == 0.0 and r.mean_abs == 0.0
    assert r.cosine == pytest.approx(1.0, abs=1e-12)


def test_identical_zero_arrays_agree():
    z = np.zeros((3, 4), np.float32)
    r = compare_blob("z", z, z.copy(), TOL)
    assert r.ok and r.max_abs == 0.0 and r.max_rel == 0.0 and r.mean_abs == 0.0
    assert r.cosine == 1.0


def test_known_perturbation_statistics():
    b = np.array([1.0, -2.0, 3.0, 4.0])           # the reference
    a = np.array([1.0, -2.5, 3.0, 4.25])          # two entries off by 0.5 and 0.25
    r = compare_blob("fc", a, b, TOL)
    assert r.max_abs == pytest.approx(0.5)
    assert r.max_rel == pytest.approx(0.5 / 4.0)  # max|a-b| / max|b|
    assert r.mean_abs == pytest.approx((0.5 + 0.25) / 4)
    dot = 1.0 + 5.0 + 9.0 + 17.0
    na = math.sqrt(1.0 + 6.25 + 9.0 + 18.0625)
    nb = math.sqrt(1.0 + 4.0 + 9.0 + 16.0)
    assert r.cosine == pytest.approx(dot / (na * nb), rel=1e-12)
    assert not r.ok and r.status == "mismatch"
    assert r.shape == [4]


def test_max_rel_uses_the_scale_of_b_not_a():
    a = np.array([10.0, 0.0])
    b = np.array([1.0, 0.0])
    assert compare_blob("x", a, b, TOL).max_rel == pytest.approx(9.0 / 1.0)
    assert compare_blob("x", b, a, TOL).max_rel == pytest.approx(9.0 / 10.0)


def test_statistics_are_computed_in_float64():
    # float32 inputs: the difference of two float32 values is exact in float64
    b = np.array([1.0, 2.0], np.float32)
    a = np.array([1.0, np.nextafter(np.float32(2.0), np.float32(3.0))], np.float32)
    r = compare_blob("x", a, b, TOL)
    assert r.max_abs == 2.0 ** -22          # one float32 ulp at 2.0, exact
    assert r.max_rel == 2.0 ** -23


# tolerance: max|a - b| <= atol + rtol * max|b|; with b's max at 4, atol 0.25, rtol 0.0625 the
# bound is exactly 0.5 (all binary fractions, so no rounding at the edge)
BOUNDARY_TOL = Tolerance(atol=0.25, rtol=0.0625)


@pytest.mark.parametrize("delta, ok", [
    (0.5, True),                         # on the bound: inside (<=)
    (0.4999, True),                      # just inside
    (np.nextafter(0.5, 1.0), False),     # the next double above the bound
    (0.5001, False),                     # just outside
])
def test_tolerance_boundary(delta, ok):
    b = np.array([0.0, -4.0, 2.0])   # a[0] = delta exactly, no rounding in a - b
    a = b.copy()
    a[0] += delta
    r = compare_blob("x", a, b, BOUNDARY_TOL)
    assert r.max_abs == delta
    assert r.ok is ok
    assert r.status == ("ok" if ok else "mismatch")


def test_tolerance_scale_is_max_abs_of_b():
    # the same absolute error passes against a large-scale reference, fails against a small one
    tol = Tolerance(atol=0.0, rtol=1e-3)
    big = np.array([1000.0, 0.5])
    small = np.array([1.0, 0.5])
    assert compare_blob("x", big + [0, 0.9], big, tol).ok           # 0.9 <= 1e-3 * 1000
    assert not compare_blob("x", small + [0, 0.9], small, tol).ok   # 0.9 >  1e-3 * 1
    # atol alone lets a zero reference pass
    assert compare_blob("x", np.array([1e-6]), np.array([0.0]), Tolerance(atol=1e-5, rtol=0)).ok
    assert not compare_blob("x", np.array([1e-4]), np.array([0.0]), Tolerance(atol=1e-5, rtol=0)).ok


def test_default_tolerance():
    assert (TOL.atol, TOL.rtol) == (1e-5, 1e-4)


def test_shape_mismatch_is_reported_not_raised():
    a = np.zeros((2, 3), np.float32)
    b = np.zeros((3, 2), np.float32)
    r = compare_blob("pool1", a, b, TOL)
    assert not r.ok
    assert r.status == "shape mismatch"
    assert r.shape == [[2, 3], [3, 2]]
    assert r.max_abs is None and r.max_rel is None and r.mean_abs is None and r.cosine is None


def test_same_size_different_shape_is_a_shape_mismatch():
    # not silently flattened: 6 values either way, but the layout differs
    a = np.arange(6.0).reshape(2, 3)
    r = compare_blob("x", a, a.reshape(3, 2), TOL)
    assert r.status == "shape mismatch" and not r.ok


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_on_one_side_is_not_ok(side, bad):
    b = np.array([1.0, 2.0, 3.0])
    a = b.copy()
    (a if side == "a" else b)[1] = bad
    r = compare_blob("x", a, b, Tolerance(atol=1e9, rtol=1e9))  # no tolerance can excuse it
    assert not r.ok
    assert r.status == "non-finite"
    assert r.max_abs is None and r.max_rel is None  # nothing JSON cannot carry


def test_nan_on_both_sides_is_not_ok():
    a = np.array([1.0, np.nan])
    assert not compare_blob("x", a, a.copy(), TOL).ok


def test_empty_blob_agrees():
    e = np.zeros((0, 3), np.float32)
    r = compare_blob("e", e, e.copy(), TOL)
    assert r.ok and r.shape == [0, 3]


def test_missing_side_status():
    a = np.ones((2, 2))
    r = compare_blob("x", a, None, TOL)
    assert r.status == "missing" and not r.ok and r.shape == [2, 2]
    r = compare_blob("x", None, a, TOL)
    assert r.status == "missing" and not r.ok


# ---------------------------------------------------------------------------------------------
# compare_runs
# ---------------------------------------------------------------------------------------------


def _runs():
    base = {n: np.full((2, 2), float(i + 1)) for i, n in enumerate(["data", "conv1", "conv1:1", "pool1", "fc"])}
    other = {k: v.copy() for k, v in base.items()}
    other["conv1:1"] = other["conv1:1"] + 0.01   # small error, first in order
    other["fc"] = other["fc"] * 100.0             # the worst error, later in order
    return base, other


def test_first_divergence_is_first_in_order_not_worst():
    a, b = _runs()
    order = ["data", "conv1", "conv1:1", "pool1", "fc"]
    report = compare_runs(order, a, b, TOL)
    assert report["first_divergence"] == "conv1:1"
    assert report["ok"] is False
    assert report["compared"] == 5
    assert [r["name"] for r in report["blobs"]] == order
    assert [r["ok"] for r in report["blobs"]] == [True, True, False, True, False]
    worst = max(report["blobs"], key=lambda r: r["max_rel"])
    assert worst["name"] == "fc"


def test_order_argument_not_dict_order_decides():
    a, b = _runs()
    # dicts built in reverse order: the answer must follow ``order``
    a = dict(reversed(list(a.items())))
    b = dict(reversed(list(b.items())))
    report = compare_runs(["data", "conv1", "conv1:1", "pool1", "fc"], a, b, TOL)
    assert report["first_divergence"] == "conv1:1"
    report = compare_runs(["fc", "conv1:1"], a, b, TOL)
    assert report["first_divergence"] == "fc"


def test_all_agree():
    a, _ = _runs()
    report = compare_runs(list(a), a, {k: v.copy() for k, v in a.items()}, TOL)
    assert report["ok"] is True and report["first_divergence"] is None
    assert report["compared"] == len(a)


def test_blobs_missing_on_one_side_are_skipped():
    a = {"x": np.ones(3), "only_a": np.ones(3), "y": np.ones(3)}
    b = {"x": np.ones(3), "y": np.ones(3), "only_b": np.zeros(3)}
    report = compare_runs(["x", "only_a", "only_b", "y", "not_anywhere"], a, b, TOL)
    assert [r["name"] for r in report["blobs"]] == ["x", "y"]
    assert report["compared"] == 2
    assert report["ok"] is True and report["first_divergence"] is None


def test_blobs_not_in_order_are_ignored():
    a = {"x": np.ones(3), "extra": np.ones(3)}
    b = {"x": np.ones(3), "extra": np.zeros(3)}
    report = compare_runs(["x"], a, b, TOL)
    assert report["ok"] and [r["name"] for r in report["blobs"]] == ["x"]


def test_nothing_shared_is_not_ok():
    report = compare_runs(["x", "y"], {"x": np.ones(1)}, {"y": np.ones(1)}, TOL)
    assert report["blobs"] == [] and report["compared"] == 0
    assert report["ok"] is False and report["first_divergence"] is None
    assert "no blob is exposed by both runs" in format_report(report, "t")


def test_shape_mismatch_in_a_run():
    a = {"x": np.ones((1, 4)), "y": np.ones((1, 2, 3)), "z": np.ones(2)}
    b = {"x": np.ones((1, 4)), "y": np.ones((1, 3, 2)), "z": np.ones(2)}
    report = compare_runs(["x", "y", "z"], a, b, TOL)
    assert report["first_divergence"] == "y"
    row = report["blobs"][1]
    assert row["status"] == "shape mismatch" and row["ok"] is False
    assert row["shape"] == [[1, 2, 3], [1, 3, 2]]
    assert report["blobs"][2]["ok"] is True
    text = format_report(report, "t")
    assert "1×2×3 vs 1×3×2" in text
    strict_json_roundtrip(report)


def test_rename_b():
    a = {"conv1": np.ones(2), "fc": np.ones(2)}
    b = {"conv1_out": np.ones(2), "fc": np.ones(2) * 2}
    report = compare_runs(["conv1", "fc"], a, b, TOL, rename_b={"conv1": "conv1_out"})
    assert [r["name"] for r in report["blobs"]] == ["conv1", "fc"]
    assert report["blobs"][0]["ok"] and report["first_divergence"] == "fc"


# ---------------------------------------------------------------------------------------------
# format_report and JSON
# ---------------------------------------------------------------------------------------------


def test_format_report_marks_first_divergence():
    a, b = _runs()
    report = compare_runs(["data", "conv1", "conv1:1", "pool1", "fc"], a, b, TOL)
    text = format_report(report, "A  vs  B")
    lines = text.splitlines()
    assert lines[0] == "A  vs  B"
    marked = [ln for ln in lines if "first divergence" in ln and not ln.startswith("2 of")]
    assert len(marked) == 1 and marked[0].split()[0] == "conv1:1"
    assert "<- first divergence" in marked[0]
    fc_line = next(ln for ln in lines if ln.split() and ln.split()[0] == "fc")
    assert "mismatch" in fc_line and "first divergence" not in fc_line
    assert lines[-1] == "2 of 5 blobs differ; first divergence: conv1:1"
    for name in ("data", "conv1", "pool1"):
        row = next(ln for ln in lines if ln.split() and ln.split()[0] == name)
        assert row.rstrip().endswith("ok")


def test_format_report_all_agree():
    a, _ = _runs()
    report = compare_runs(list(a), a, {k: v.copy() for k, v in a.items()}, TOL)
    text = format_report(report, "t")
    assert text.splitlines()[-1] == "all 5 blobs agree"
    assert "first divergence" not in text
    assert "2×2" in text


def test_format_report_scalar_and_none_values():
    report = compare_runs(["s", "v"], {"s": np.float64(1.0).reshape(()), "v": np.ones((2, 3))},
                          {"s": np.float64(1.0).reshape(()), "v": np.ones((3, 2))}, TOL)
    text = format_report(report, "t")
    assert "scalar" in text
    v_line = next(ln for ln in text.splitlines() if ln.startswith("v "))
    assert v_line.split().count("-") == 4   # max abs, max rel, mean abs, cosine: None prints as '-'
    assert "shape mismatch  <- first divergence" in v_line


def test_report_is_json_serialisable():
    a, b = _runs()
    a["bad_shape"], b["bad_shape"] = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    report = compare_runs(["data", "conv1", "conv1:1", "pool1", "fc", "bad_shape"], a, b, TOL)
    back = strict_json_roundtrip(report)
    assert back["first_divergence"] == "conv1:1"
    assert back["ok"] is False
    for row in back["blobs"]:
        assert set(row) >= {"name", "shape", "max_abs", "max_rel", "mean_abs", "cosine", "ok", "status"}
        assert isinstance(row["ok"], bool)
        assert row["max_abs"] is None or isinstance(row["max_abs"], float)
    # numbers, not NumPy scalars: json.dumps would have raised, and types survive
    assert all(type(r.max_abs) is float for r in [compare_blob("x", np.ones(2, np.float32),
                                                               np.ones(2, np.float32), TOL)])


# BUG (kept failing on purpose): a blob with NaN/Inf, or a zero reference against a nonzero A, gives
# max_abs=inf, max_rel=inf, mean_abs=nan, cosine=nan, which json.dumps writes as Infinity / NaN: not
# JSON (RFC 8259), so `convnet diff --json` output is rejected by strict parsers (jq, JSON.parse) in
# exactly the case the diff exists for. See also tests/test_diff.py::test_json_with_nan_weights_is_strict_json.
@pytest.mark.parametrize("a, b", [
    (np.array([1.0, np.nan]), np.array([1.0, 2.0])),   # NaN in A
    (np.array([1.0, 2.0]), np.array([0.0, 0.0])),      # zero reference: max_rel = inf
])
def test_report_with_non_finite_statistics_is_strict_json(a, b):
    report = compare_runs(["x"], {"x": a}, {"x": b}, TOL)
    assert report["ok"] is False and report["first_divergence"] == "x"
    strict_json_roundtrip(report)
