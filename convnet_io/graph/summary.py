"""Per-layer summary of a graph: output shapes, learnable parameters and multiply-adds."""
from __future__ import annotations

import operator
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
_TYPE = operator.attrgetter("type")


def summarize(graph: Graph, all_rows: bool = True) -> dict[str, Any]:
    """The data behind ``convnet build``: one row per layer, then totals.

    ``macs`` counts multiply-adds of one forward pass for a single item (batch 1), as model tables
    usually do; ``batch`` says which batch size the shapes were inferred for. With ``all_rows``
    false, a net of more than TABLE_ROWS layers keeps rows for its first and last SHOWN_ROWS layers
    only (the totals still cover every layer) and says how many layers of each type it has.
    """
    batch = _batch_size(graph)
    nodes, shapes, blob_of = graph.nodes, graph.shapes, graph.blob_of
    long = not all_rows and len(nodes) > TABLE_ROWS
    macs_of = {}  # type -> its spec's macs, for the types that count any
    for type_ in set(map(_TYPE, nodes)):
        spec = get_spec(type_)
        if spec is not None and not _counts_none(spec):
            macs_of[type_] = spec.macs

    def macs(node) -> int:
        fn = macs_of.get(node.type)
        if fn is None:
            return 0
        n = fn(node.attrs, [shapes[b] for b in node.bottoms], [shapes[t] for t in node.tops])
        return n // batch if batch else n

    def row(node) -> dict[str, Any]:
        tops = node.tops
        return {
            "name": node.name,
            "type": node.type,
            "tops": [blob_of[t] for t in tops],
            "shape": list(shapes[tops[0]]) if tops else [],
            "params": node.param_count,
            "macs": macs(node),
        }

    if long:  # rows for both ends; the totals from every node
        rows = [row(n) for n in nodes[:SHOWN_ROWS] + nodes[-SHOWN_ROWS:]]
        total_params = sum(n.param_count for n in nodes if n.params)
        total_macs = sum(macs(n) for n in nodes if n.type in macs_of) if macs_of else 0
    else:
        rows = [row(n) for n in nodes]
        total_params = sum(r["params"] for r in rows)
        total_macs = sum(r["macs"] for r in rows)
    out = {
        "name": graph.name,
        "phase": graph.phase,
        "batch": batch,
        "layers": rows,
        "total_params": total_params,
        "total_macs": total_macs,
        "output_shapes": {blob_of[v]: list(shapes[v]) for v in graph.outputs},
    }
    if long:
        out["layer_count"] = len(nodes)
        out["layer_types"] = dict(Counter(map(_TYPE, nodes)).most_common())
        out["omitted"] = {"after": SHOWN_ROWS, "count": len(nodes) - 2 * SHOWN_ROWS}
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
