"""Per-layer summary of a graph: output shapes, learnable parameters and multiply-adds."""
from __future__ import annotations

from collections import Counter
from typing import Any

from convnet_io.graph.ir import Graph
from convnet_io.graph.layers import get_spec
from convnet_io.graph.layers.registry import LayerSpec
from convnet_io.terminal import name

# A table longer than this shows its first and last layers and counts the rest by type: a
# 700,000-layer chain would print 700,000 lines no one reads (``--json`` still lists every layer).
TABLE_ROWS = 10_000
SHOWN_ROWS = 20  # at each end of a long table


def summarize(graph: Graph, all_rows: bool = True) -> dict[str, Any]:
    """The data behind ``convnet build``: one row per layer, then totals.

    ``macs`` counts multiply-adds of one forward pass for a single item (batch 1), as model tables
    usually do; ``batch`` says which batch size the shapes were inferred for. With ``all_rows``
    false, a net of more than TABLE_ROWS layers keeps rows for its first and last SHOWN_ROWS layers
    only (the totals still cover every layer) and says how many layers of each type it has.
    """
    batch = _batch_size(graph)
    nodes, shapes = graph.nodes, graph.shapes
    long = not all_rows and len(nodes) > TABLE_ROWS
    keep = range(SHOWN_ROWS, len(nodes) - SHOWN_ROWS) if long else range(0)
    macs_of: dict[str, Any] = {}  # type -> the spec's macs, or None where it counts none
    rows = []
    total_params = total_macs = 0
    for i, node in enumerate(nodes):
        type_ = node.type
        if type_ in macs_of:
            macs_fn = macs_of[type_]
        else:
            spec = get_spec(type_)
            macs_fn = macs_of[type_] = None if spec is None or _counts_none(spec) else spec.macs
        macs = 0
        if macs_fn is not None:
            macs = macs_fn(node.attrs, [shapes[b] for b in node.bottoms], [shapes[t] for t in node.tops])
            if batch:
                macs //= batch
        params = node.param_count if node.params else 0
        total_params += params
        total_macs += macs
        if i in keep:
            continue
        tops = node.tops
        rows.append({
            "name": node.name,
            "type": type_,
            "tops": [graph.blob_of[t] for t in tops],
            "shape": list(shapes[tops[0]]) if tops else [],
            "params": params,
            "macs": macs,
        })
    out = {
        "name": graph.name,
        "phase": graph.phase,
        "batch": batch,
        "layers": rows,
        "total_params": total_params,
        "total_macs": total_macs,
        "output_shapes": {graph.blob_of[v]: list(graph.shapes[v]) for v in graph.outputs},
    }
    if long:
        out["layer_count"] = len(nodes)
        out["layer_types"] = dict(Counter(n.type for n in nodes).most_common())
        out["omitted"] = {"after": SHOWN_ROWS, "count": len(keep)}
    return out


def _counts_none(spec: type[LayerSpec]) -> bool:
    return getattr(spec.macs, "__func__", None) is LayerSpec.macs.__func__


def _batch_size(graph: Graph) -> int:
    for v in graph.inputs:
        shape = graph.shapes[v]
        if shape:
            return int(shape[0])
    return 1


def format_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned text table with per-item shapes and a totals line."""
    head = ("layer", "type", "top", f"output (N={summary['batch']})", "params", "MACs")
    layers = summary["layers"]
    omitted = summary.get("omitted")
    types = summary.get("layer_types")
    if omitted is None and len(layers) > TABLE_ROWS:  # every row given: the table is cut here
        types = dict(Counter(r["type"] for r in layers).most_common())
        omitted = {"after": SHOWN_ROWS, "count": len(layers) - 2 * SHOWN_ROWS}
        layers = layers[:SHOWN_ROWS] + layers[-SHOWN_ROWS:]
    lines = []
    for r in layers:
        shape = r["shape"][1:] if len(r["shape"]) > 1 else r["shape"]
        lines.append((name(r["name"]), name(r["type"]), name(",".join(r["tops"])),
                      "×".join(str(d) for d in shape) if shape else "scalar",
                      f"{r['params']:,}" if r["params"] else "-",
                      f"{r['macs']:,}" if r["macs"] else "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    right = {4, 5}

    def fmt(row):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [f"net: {summary['name'] or '(unnamed)'}  phase: {summary['phase']}", fmt(head),
           "  ".join("-" * w for w in widths)]
    rows = [fmt(r) for r in lines]
    if omitted is not None:
        cut = omitted["after"]
        rows[cut:cut] = [f"... {omitted['count']:,} more layers ..."]
    out += rows
    out.append("")
    if omitted is not None:
        count = sum(types.values())
        out.append(f"layers: {count:,} ({', '.join(f'{name(t)} {n:,}' for t, n in types.items())}); "
                   f"{omitted['count']:,} not shown (--json lists every layer)")
    out.append(f"total: {summary['total_params']:,} parameters, "
               f"{summary['total_macs']:,} multiply-adds per item")
    outs = ", ".join(f"{name(k)} {'×'.join(map(str, v)) or 'scalar'}" for k, v in summary["output_shapes"].items())
    out.append(f"outputs: {outs}")
    return "\n".join(out)
