"""RNN, LSTM and LSTMUnit with Caffe's numerics, forward and backward.

Caffe runs these layers as an unrolled net (``recurrent_layer.cpp``); the loops below compute the
same layers step by step:

* ``h_conted_{t-1} = cont_t * h_{t-1}`` (a Scale by the continuation flag, any value, not only 0/1);
* LSTM: ``gate_input_t = W_hc h_conted_{t-1} + W_xc x_t + b_c [+ W_xc_static x_static]``, then
  LSTMUnit: ``i, o = sigmoid``, ``g = tanh``, ``f = 0 if cont_t == 0 else cont_t * sigmoid``,
  ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``;
* RNN: ``h_t = tanh(W_hh h_conted_{t-1} + W_xh x_t + b_h [+ W_xh_static x_static])``,
  ``o_t = tanh(W_ho h_t + b_o)``.

Gradients follow Caffe, including where Caffe's differ from the derivative of its forward:
LSTMUnit's forget-gate gradient is ``f (1 - f)`` with ``f`` already scaled by ``cont_t`` (the same
as the true derivative only for cont in {0, 1}); nothing flows to ``cont``; and with
``expose_hidden`` the state inputs (``h_0``, ``c_0``) get no gradient and the gradients of the
state outputs (``h_T``, ``c_T``) are dropped, because Caffe shares only their data with the
unrolled net, not their diffs.

Without ``expose_hidden`` Caffe starts each forward pass from the state the previous pass ended in
(zero for a new net; ``cont_t = 0`` at the first step makes it irrelevant). The converted layer
carries the state across passes in training mode (detached: Caffe does not backpropagate across
batches) and starts from zero in evaluation mode, as a freshly loaded Caffe net does; ``reset()``
is Caffe's ``Reset``.
"""
from __future__ import annotations

import torch
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


def _blob(shape) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=torch.float32))


def _gates(gates: torch.Tensor, cont: torch.Tensor):
    """LSTMUnit's activations; gates (N, 4H) packed i, f, o, g; cont (N,)."""
    i, f, o, g = gates.chunk(4, dim=-1)
    c = cont.unsqueeze(-1).to(gates.dtype)
    f = torch.where(c == 0, torch.zeros_like(f), c * torch.sigmoid(f))
    return torch.sigmoid(i), f, torch.sigmoid(o), torch.tanh(g)


class _LSTMUnitFunction(torch.autograd.Function):
    """Caffe's LSTMUnitLayer: forward, and its Backward_cpu line by line."""

    @staticmethod
    def forward(ctx, c_prev, gates, cont):
        i, f, o, g = _gates(gates, cont)
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, o * tanh_c

    @staticmethod
    def backward(ctx, c_diff, h_diff):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        c_term = c_diff + h_diff * o * (1 - tanh_c * tanh_c)
        gates_diff = torch.cat([c_term * g * i * (1 - i), c_term * c_prev * f * (1 - f),
                                h_diff * tanh_c * o * (1 - o), c_term * i * (1 - g * g)], dim=-1)
        return c_term * f, gates_diff, None


def lstm_unit(c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor):
    """(c_t, h_t) of one step; Caffe's backward when a gradient is being recorded."""
    if torch.is_grad_enabled() and (c_prev.requires_grad or gates.requires_grad):
        return _LSTMUnitFunction.apply(c_prev, gates, cont.detach())
    i, f, o, g = _gates(gates, cont)
    c = f * c_prev + i * g
    return c, o * torch.tanh(c)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Caffe's InnerProduct over the last axis of ``x`` (weight: num_output x K)."""
    y = x @ weight.t()
    return y + bias if bias is not None else y


class Recurrent(CaffeLayer):
    """What RNN and LSTM share: the inputs, the state carried across passes, the blobs."""

    state_names: tuple[str, ...] = ()

    def __init__(self, attrs, shapes: list[tuple[int, ...]]):
        super().__init__()
        self.num_output = attrs.num_output
        self.expose_hidden = attrs.expose_hidden
        self.static_input = attrs.static_input
        self.blob_names = self.names(self.static_input)
        for name, shape in zip(self.blob_names, shapes):
            setattr(self, name, _blob(shape))
        self._carried: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def names(cls, static: bool) -> list[str]:
        raise NotImplementedError

    def caffe_blobs(self):
        return [getattr(self, n) for n in self.blob_names]

    def reset(self) -> None:
        """Caffe's RecurrentLayer::Reset: the next pass starts from a zero state."""
        self._carried = None

    def _split(self, bottoms):
        x, cont = bottoms[0], bottoms[1]
        static = bottoms[2] if self.static_input else None
        hidden = len(self.state_names) if self.expose_hidden else 0
        state = tuple(bottoms[len(bottoms) - hidden:]) if hidden else None
        return x, cont, static, state

    def _initial_state(self, state, streams: int, like: torch.Tensor) -> list[torch.Tensor]:
        if state is not None:
            return [s.detach().reshape(streams, self.num_output) for s in state]
        carried = self._carried
        if self.training and carried is not None and carried[0].shape[0] == streams:
            return [s.to(like.dtype) for s in carried]
        return [like.new_zeros(streams, self.num_output) for _ in self.state_names]

    def _finish(self, final: list[torch.Tensor]):
        """Keep the final state for the next pass; the exposed copies carry no gradient (Caffe)."""
        final = [s.detach() for s in final]
        if not self.expose_hidden:
            if self.training:
                self._carried = tuple(final)
            return ()
        return tuple(s.unsqueeze(0) for s in final)

    def extra_repr(self):
        shapes = ", ".join(f"{n}={tuple(getattr(self, n).shape)}" for n in self.blob_names)
        return f"num_output={self.num_output}, {shapes}, expose_hidden={self.expose_hidden}"


class LSTM(Recurrent):
    state_names = ("h", "c")

    @classmethod
    def names(cls, static: bool) -> list[str]:
        return ["W_xc", "b_c"] + (["W_xc_static"] if static else []) + ["W_hc"]

    def forward(self, *bottoms):
        x, cont, static, state = self._split(bottoms)
        steps, streams = x.shape[0], x.shape[1]
        cont = cont.detach()
        gate_x = _linear(x.reshape(steps, streams, -1), self.W_xc, self.b_c)
        gate_static = _linear(static.reshape(streams, -1), self.W_xc_static) if static is not None else None
        h, c = self._initial_state(state, streams, gate_x)
        outputs = []
        for t in range(steps):
            h_conted = h * cont[t].unsqueeze(-1).to(h.dtype)
            gate_input = _linear(h_conted, self.W_hc) + gate_x[t]
            if gate_static is not None:
                gate_input = gate_input + gate_static
            c, h = lstm_unit(c, gate_input, cont[t])
            outputs.append(h)
        return (torch.stack(outputs), *self._finish([h, c]))


class RNN(Recurrent):
    state_names = ("h",)

    @classmethod
    def names(cls, static: bool) -> list[str]:
        return ["W_xh", "b_h"] + (["W_xh_static"] if static else []) + ["W_hh", "W_ho", "b_o"]

    def forward(self, *bottoms):
        x, cont, static, state = self._split(bottoms)
        steps, streams = x.shape[0], x.shape[1]
        cont = cont.detach()
        hidden_x = _linear(x.reshape(steps, streams, -1), self.W_xh, self.b_h)
        hidden_static = _linear(static.reshape(streams, -1), self.W_xh_static) if static is not None else None
        (h,) = self._initial_state(state, streams, hidden_x)
        hs = []
        for t in range(steps):
            h_conted = h * cont[t].unsqueeze(-1).to(h.dtype)
            pre = _linear(h_conted, self.W_hh) + hidden_x[t]
            if hidden_static is not None:
                pre = pre + hidden_static
            h = torch.tanh(pre)
            hs.append(h)
        o = torch.tanh(_linear(torch.stack(hs), self.W_ho, self.b_o))
        return (o, *self._finish([h]))


class LSTMUnit(CaffeLayer):
    """Caffe's LSTMUnit layer on its own: (c_{t-1}, gate input, cont_t) -> (c_t, h_t)."""

    def forward(self, c_prev, gates, cont):
        c, h = lstm_unit(c_prev[0], gates[0], cont[0])
        return c.unsqueeze(0), h.unsqueeze(0)


@converter("LSTM")
def convert_lstm(node: Node, graph: Graph) -> nn.Module:
    return LSTM(node.attrs, [p.shape for p in node.params])


@converter("RNN")
def convert_rnn(node: Node, graph: Graph) -> nn.Module:
    return RNN(node.attrs, [p.shape for p in node.params])


@converter("LSTMUnit")
def convert_lstm_unit(node: Node, graph: Graph) -> nn.Module:
    return LSTMUnit()
