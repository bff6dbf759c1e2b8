"""Per-layer summary of a graph: output shapes, learnable parameters and multiply-adds."""
from __future__ import annotations

from typing import Any

from convnet_io.graph.ir import Graph
from convnet_io.graph.layers import get_spec
from convnet_io.terminal import name


def summarize(graph: Graph) -> dict[str, Any]:
    """The data behind ``convnet build``: one row per layer, then totals.

    ``macs`` counts multiply-adds of one forward pass for a single item (batch 1), as model tables
    usually do; ``batch`` says which batch size the shapes were inferred for.
    """
    batch = _batch_size(graph)
    rows = []
    for node in graph.nodes:
        spec = get_spec(node.type)
        bshapes = [graph.shapes[b] for b in node.bottoms]
        tshapes = [graph.shapes[t] for t in node.tops]
        macs = spec.macs(node.attrs, bshapes, tshapes) if spec else 0
        rows.append({
            "name": node.name,
            "type": node.type,
            "tops": [graph.blob_of[t] for t in node.tops],
            "shape": list(tshapes[0]) if tshapes else [],
            "params": node.param_count,
            "macs": macs // batch if batch else macs,
        })
    return {
        "name": graph.name,
        "phase": graph.phase,
        "batch": batch,
        "layers": rows,
        "total_params": sum(r["params"] for r in rows),
        "total_macs": sum(r["macs"] for r in rows),
        "output_shapes": {graph.blob_of[v]: list(graph.shapes[v]) for v in graph.outputs},
    }


def _batch_size(graph: Graph) -> int:
    for v in graph.inputs:
        shape = graph.shapes[v]
        if shape:
            return int(shape[0])
    return 1


def format_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned text table with per-item shapes and a totals line."""
    head = ("layer", "type", "top", f"output (N={summary['batch']})", "params", "MACs")
    lines = []
    for r in summary["layers"]:
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
    out += [fmt(r) for r in lines]
    out.append("")
    out.append(f"total: {summary['total_params']:,} parameters, "
               f"{summary['total_macs']:,} multiply-adds per item")
    outs = ", ".join(f"{name(k)} {'×'.join(map(str, v)) or 'scalar'}" for k, v in summary["output_shapes"].items())
    out.append(f"outputs: {outs}")
    return "\n".join(out)
