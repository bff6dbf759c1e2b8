"""The comparator: per-blob error statistics and the first divergence, backend-agnostic."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class BlobComparison:
    name: str
    shape: list[int]
    max_abs: float | None
    max_rel: float | None
    mean_abs: float | None
    cosine: float | None
    ok: bool
    status: str  # "ok", "mismatch", "shape mismatch", "non-finite", "missing"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Tolerance:
    """A blob agrees when max|a - b| <= atol + rtol * max|b| (b is the reference)."""

    atol: float = 1e-5
    rtol: float = 1e-4


def compare_blob(name: str, a: np.ndarray | None, b: np.ndarray | None, tol: Tolerance) -> BlobComparison:
    """Statistics for one blob; max_rel is max|a - b| / max|b|, the error relative to the blob's scale."""
    if a is None or b is None:
        shape = list((a if a is not None else b).shape)
        return BlobComparison(name, shape, None, None, None, None, False, "missing")
    if a.shape != b.shape:
        return BlobComparison(name, [list(a.shape), list(b.shape)], None, None, None, None, False,  # type: ignore[list-item]
                              "shape mismatch")
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if a64.size == 0:
        return BlobComparison(name, list(a.shape), 0.0, 0.0, 0.0, 1.0, True, "ok")
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        # NaN or Inf on either side: never agreement, and no statistic that JSON cannot carry.
        return BlobComparison(name, list(a.shape), None, None, None, None, False, "non-finite")
    diff = np.abs(a64 - b64)
    finite = True
    scale = float(np.abs(b64).max())
    max_abs = float(diff.max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else None)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cosine = float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    ok = bool(finite and max_abs <= tol.atol + tol.rtol * scale)
    if max_rel is None:
        max_rel = float(np.finfo(np.float64).max)  # a zero reference with a non-zero answer
    return BlobComparison(name, list(a.shape), max_abs, max_rel, float(diff.mean()), cosine, ok,
                          "ok" if ok else "mismatch")


def compare_runs(order: list[str], a: dict[str, np.ndarray], b: dict[str, np.ndarray], tol: Tolerance,
                 rename_b: dict[str, str] | None = None) -> dict:
    """Compare every blob both runs expose, in ``order``; the first one out of tolerance is the
    first divergence. ``rename_b`` maps a name in ``order`` to B's name for it."""
    rows = []
    for name in order:
        bname = (rename_b or {}).get(name, name)
        if name not in a or bname not in b:
            continue
        rows.append(compare_blob(name, a[name], b[bname], tol))
    first = next((r.name for r in rows if not r.ok), None)
    return {"blobs": [r.as_dict() for r in rows], "ok": first is None and bool(rows),
            "first_divergence": first, "compared": len(rows)}


def format_report(report: dict, title: str) -> str:
    head = ("blob", "shape", "max abs", "max rel", "mean abs", "cosine", "status")
    lines = []
    for r in report["blobs"]:
        def num(v, fmt="{:.3e}"):
            return "-" if v is None else fmt.format(v)

        shape = r["shape"]
        shape_text = (" vs ".join("×".join(map(str, s)) for s in shape) if shape and isinstance(shape[0], list)
                      else "×".join(map(str, shape)) or "scalar")
        status = r["status"] + ("  <- first divergence" if r["name"] == report["first_divergence"] else "")
        lines.append((r["name"], shape_text, num(r["max_abs"]), num(r["max_rel"]), num(r["mean_abs"]),
                      num(r["cosine"], "{:.6f}"), status))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [title, fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines] + [""]
    if not report["blobs"]:
        out.append("no blob is exposed by both runs")
    elif report["ok"]:
        out.append(f"all {report['compared']} blobs agree")
    else:
        bad = sum(1 for r in report["blobs"] if not r["ok"])
        out.append(f"{bad} of {report['compared']} blobs differ; first divergence: {report['first_divergence']}")
    return "\n".join(out)
