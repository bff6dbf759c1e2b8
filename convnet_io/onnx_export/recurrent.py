"""RNN, LSTM and LSTMUnit as ONNX: one ``Scan`` over the timesteps, ``cont`` applied exactly.

ONNX's own ``LSTM``/``RNN`` operators cannot express Caffe's continuation flags (a per-step,
per-stream scaling of the previous state, and a forget gate forced to 0 where ``cont_t == 0``), so
each layer exports as:

* the input transform for every step at once (``W_x* x + b``, and ``W_x*_static x_static``);
* a ``Scan`` over axis 0 (time) of that transform and of ``cont``, whose body is one step of
  Caffe's unrolled net: ``h_conted = cont_t * h_{t-1}``, the recurrent InnerProduct, and the
  LSTMUnit (LSTM) or tanh (RNN) — the state (h, c) is the Scan's loop-carried value;
* for RNN, the output transform ``tanh(W_ho h_t + b_o)`` over all steps after the Scan.

The number of steps is not fixed: the export runs for any T. The initial state is zero (a freshly
loaded Caffe net), or the ``h_0``/``c_0`` bottoms with ``expose_hidden``, whose ``h_T``/``c_T``
tops are the Scan's final state.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from convnet_io.onnx_export.context import FLOAT
from convnet_io.onnx_export.registry import exporter


class _Body:
    """Nodes of the Scan body; names drawn from the export's pool so nothing shadows an outer value."""

    def __init__(self, ctx, prefix: str):
        self.ctx, self.prefix, self.nodes = ctx, prefix, []

    def add(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [self.ctx.fresh(f"{self.prefix}/{op.lower()}")]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attrs))
        return outputs[0]


class _Main:
    """The same ``add`` into the exported graph itself (the LSTMUnit layer)."""

    def __init__(self, ctx, prefix: str):
        self.ctx, self.prefix = ctx, prefix

    def add(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        return self.ctx.add(op, inputs, outputs, name=f"{self.prefix}/{op.lower()}", **attrs)


def _unit(emit, ctx, prefix: str, c_prev: str, gates: str, cont: str, hidden: int, axis: int):
    """Caffe's LSTMUnit: gates packed i, f, o, g along ``axis``; cont broadcast over the channels."""
    names = [ctx.fresh(f"{prefix}/{g}_input") for g in "ifog"]
    emit.add("Split", [gates, ctx.ints(f"{prefix}_gate_split", [hidden] * 4)], names, axis=axis)
    i = emit.add("Sigmoid", [names[0]])
    # f = cont * sigmoid(f'); a zero cont gives exactly 0, as Caffe's (cont == 0 ? 0 : ...).
    f = emit.add("Mul", [cont, emit.add("Sigmoid", [names[1]])])
    o = emit.add("Sigmoid", [names[2]])
    g = emit.add("Tanh", [names[3]])
    c = emit.add("Add", [emit.add("Mul", [f, c_prev]), emit.add("Mul", [i, g])])
    return c, emit.add("Mul", [o, emit.add("Tanh", [c])])


def _input_transform(ctx, node, x: str, weight: int, bias: int, rows: int) -> str:
    """W x_t + b for every step at once: (T, N, ...) -> (T, N, rows)."""
    flat = ctx.add("Reshape", [x, ctx.ints(f"{node.name}_x_shape", [0, 0, -1])], name=f"{node.name}/x_reshape")
    w = ctx.blob(node, weight, np.ascontiguousarray(ctx.blobs[node.name][weight].T), role="wt")
    y = ctx.add("MatMul", [flat, w], name=f"{node.name}/x_transform")
    return ctx.add("Add", [y, ctx.blob(node, bias)], name=f"{node.name}/x_transform_bias")


def _static_transform(ctx, node, x_static: str, weight: int) -> str:
    """W_static x_static: (N, ...) -> (N, rows), added to every step."""
    flat = ctx.add("Reshape", [x_static, ctx.ints(f"{node.name}_static_shape", [0, -1])],
                   name=f"{node.name}/static_reshape")
    w = np.ascontiguousarray(ctx.blobs[node.name][weight].T)
    return ctx.add("MatMul", [flat, ctx.blob(node, weight, w, role="W_static_t")], name=f"{node.name}/static_transform")


def _initial(ctx, node, bottom: str | None, cont: str, hidden: int, what: str) -> str:
    """The state at t = 0 as (N, H): an exposed bottom (1, N, H), or zeros sized by cont's streams."""
    if bottom is not None:
        return ctx.add("Squeeze", [bottom, ctx.ints(f"{node.name}_axis0", [0])], name=f"{node.name}/{what}_0")
    streams = ctx.add("Slice", [ctx.add("Shape", [cont], name=f"{node.name}/cont_shape"),
                                ctx.ints(f"{node.name}_one", [1]), ctx.ints(f"{node.name}_two", [2])],
                      name=f"{node.name}/streams")
    shape = ctx.add("Concat", [streams, ctx.ints(f"{node.name}_hidden", [hidden])], name=f"{node.name}/{what}_shape",
                    axis=0)
    zero = helper.make_tensor(f"{node.name}_zero", FLOAT, [1], [0.0])
    return ctx.add("ConstantOfShape", [shape], name=f"{node.name}/{what}_0", value=zero)


def _exposed(ctx, node, state: str, top: str) -> None:
    ctx.add("Unsqueeze", [state, ctx.ints(f"{node.name}_axis0_out", [0])], [top], name=f"{node.name}/{top}")


def _scan(ctx, node, body: _Body, states_in, states_out, step_in, scan_inputs, step_out, outer_states):
    """Wrap a one-step body in a Scan over axis 0; returns (final states..., stacked output)."""
    inputs = [helper.make_tensor_value_info(n, FLOAT, None) for n in (*states_in, *step_in)]
    outputs = [helper.make_tensor_value_info(n, FLOAT, None) for n in (*states_out, step_out)]
    graph = helper.make_graph(body.nodes, f"{node.name}_step", inputs, outputs)
    finals = [ctx.fresh(f"{node.name}/{s}_T") for s in ("h", "c")[:len(states_in)]]
    stacked = ctx.fresh(f"{node.name}/steps")
    ctx.add("Scan", [*outer_states, *scan_inputs], [*finals, stacked], name=f"{node.name}/scan",
            body=graph, num_scan_inputs=len(scan_inputs))
    return finals, stacked


def _names(ctx, prefix: str, *bases: str) -> list[str]:
    return [ctx.fresh(f"{prefix}/{b}") for b in bases]


def _bottoms(node, num_states: int):
    a = node.attrs
    static = node.bottoms[2] if a.static_input else None
    states = node.bottoms[len(node.bottoms) - num_states:] if a.expose_hidden else [None] * num_states
    return node.bottoms[0], node.bottoms[1], static, states


@exporter("LSTM")
def export_lstm(ctx, node):
    a, hidden = node.attrs, node.attrs.num_output
    x, cont, static, (h0, c0) = _bottoms(node, 2)
    gate_x = _input_transform(ctx, node, x, 0, 1, 4 * hidden)
    gate_static = _static_transform(ctx, node, static, 2) if static else None
    w_hc = len(node.params) - 1
    w_hc_t = ctx.blob(node, w_hc, np.ascontiguousarray(ctx.blobs[node.name][w_hc].T), role="W_hc_t")
    prefix = f"{node.name}/step"
    body = _Body(ctx, prefix)
    h_prev, c_prev, gx_t, cont_t, h_out, c_out, h_step = _names(
        ctx, prefix, "h_prev", "c_prev", "gate_x", "cont", "h", "c", "h_step")
    cont_u = body.add("Unsqueeze", [cont_t, ctx.ints(f"{node.name}_axis1", [1])])
    h_conted = body.add("Mul", [h_prev, cont_u])
    gate_input = body.add("Add", [body.add("MatMul", [h_conted, w_hc_t]), gx_t])
    if gate_static:
        gate_input = body.add("Add", [gate_input, gate_static])
    c, h = _unit(body, ctx, prefix, c_prev, gate_input, cont_u, hidden, axis=1)
    body.add("Identity", [h], [h_out])
    body.add("Identity", [c], [c_out])
    body.add("Identity", [h], [h_step])
    init = [_initial(ctx, node, h0, cont, hidden, "h"), _initial(ctx, node, c0, cont, hidden, "c")]
    (h_T, c_T), stacked = _scan(ctx, node, body, [h_prev, c_prev], [h_out, c_out], [gx_t, cont_t],
                                [gate_x, cont], h_step, init)
    ctx.add("Identity", [stacked], [node.tops[0]], name=node.name)
    if a.expose_hidden:
        _exposed(ctx, node, h_T, node.tops[1])
        _exposed(ctx, node, c_T, node.tops[2])


@exporter("RNN")
def export_rnn(ctx, node):
    a, hidden = node.attrs, node.attrs.num_output
    x, cont, static, (h0,) = _bottoms(node, 1)
    hidden_x = _input_transform(ctx, node, x, 0, 1, hidden)
    hidden_static = _static_transform(ctx, node, static, 2) if static else None
    first = 3 if static else 2  # W_hh, W_ho, b_o follow the input transforms
    blobs = ctx.blobs[node.name]
    w_hh_t = ctx.blob(node, first, np.ascontiguousarray(blobs[first].T), role="W_hh_t")
    prefix = f"{node.name}/step"
    body = _Body(ctx, prefix)
    h_prev, hx_t, cont_t, h_out, h_step = _names(ctx, prefix, "h_prev", "hidden_x", "cont", "h", "h_step")
    cont_u = body.add("Unsqueeze", [cont_t, ctx.ints(f"{node.name}_axis1", [1])])
    h_conted = body.add("Mul", [h_prev, cont_u])
    pre = body.add("Add", [body.add("MatMul", [h_conted, w_hh_t]), hx_t])
    if hidden_static:
        pre = body.add("Add", [pre, hidden_static])
    h = body.add("Tanh", [pre])
    body.add("Identity", [h], [h_out])
    body.add("Identity", [h], [h_step])
    init = [_initial(ctx, node, h0, cont, hidden, "h")]
    (h_T,), stacked = _scan(ctx, node, body, [h_prev], [h_out], [hx_t, cont_t], [hidden_x, cont], h_step, init)
    w_ho_t = ctx.blob(node, first + 1, np.ascontiguousarray(blobs[first + 1].T), role="W_ho_t")
    o = ctx.add("MatMul", [stacked, w_ho_t], name=f"{node.name}/W_ho_h")
    o = ctx.add("Add", [o, ctx.blob(node, first + 2, role="b_o")], name=f"{node.name}/W_ho_h_bias")
    ctx.add("Tanh", [o], [node.tops[0]], name=node.name)
    if a.expose_hidden:
        _exposed(ctx, node, h_T, node.tops[1])


@exporter("LSTMUnit")
def export_lstm_unit(ctx, node):
    c_prev, gates, cont = node.bottoms
    hidden = ctx.shape(c_prev)[2]
    cont_u = ctx.add("Unsqueeze", [cont, ctx.ints(f"{node.name}_axis2", [2])], name=f"{node.name}/cont")
    c, h = _unit(_Main(ctx, node.name), ctx, node.name, c_prev, gates, cont_u, hidden, axis=2)
    ctx.add("Identity", [c], [node.tops[0]], name=node.name)
    ctx.add("Identity", [h], [node.tops[1]], name=f"{node.name}/h")
