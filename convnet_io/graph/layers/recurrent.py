"""RNN, LSTM and LSTMUnit with Caffe's shape rules and blob layout.

Caffe builds each recurrent layer as an unrolled net of InnerProduct / Eltwise / Scale / LSTMUnit
layers whose shared parameters become the layer's blobs. Their order and shapes are the contract a
.caffemodel relies on (``recurrent_layer.cpp``, ``lstm_layer.cpp``, ``rnn_layer.cpp``):

* LSTM: ``W_xc`` (4H x D_x), ``b_c`` (4H), [``W_xc_static`` (4H x D_static)], ``W_hc`` (4H x H),
  the 4H gate rows packed i, f, o, g;
* RNN: ``W_xh`` (H x D_x), ``b_h`` (H), [``W_xh_static`` (H x D_static)], ``W_hh`` (H x H),
  ``W_ho`` (H x H), ``b_o`` (H).

Bottoms: ``x`` (T x N x ...), ``cont`` (T x N), optional ``x_static`` (N x ...), and with
``expose_hidden`` the initial state (``h_0``, and ``c_0`` for LSTM, each 1 x N x H). Tops: the
per-step output (T x N x H), and with ``expose_hidden`` the final state in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import count, filler
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Filler, Shape


@dataclass(frozen=True)
class RecurrentAttrs:
    num_output: int
    weight_filler: Filler | None = None
    bias_filler: Filler | None = None
    debug_info: bool = False
    expose_hidden: bool = False
    static_input: bool = False  # Caffe: more bottoms than x, cont and the exposed state


@dataclass(frozen=True)
class RecurrentLayout:
    """How one layer's bottoms are used: T, N, the flattened input sizes, static input or not."""

    steps: int
    streams: int
    x_dim: int
    static_dim: int | None


class Recurrent(LayerSpec):
    """Caffe's RecurrentLayer: the bottom/top rules shared by RNN and LSTM."""

    min_bottoms = 2
    max_bottoms = 5  # x, cont, x_static, h_0, c_0 (the exact limit depends on expose_hidden)
    state_names: tuple[str, ...] = ()
    gates = 1  # rows of the x and h transforms per unit of num_output

    @classmethod
    def attrs(cls, layer):
        p = layer.recurrent_param
        hidden = len(cls.state_names) if p.expose_hidden else 0
        return RecurrentAttrs(
            num_output=int(p.num_output),
            weight_filler=filler(p.weight_filler, p.HasField("weight_filler")),
            bias_filler=filler(p.bias_filler, p.HasField("bias_filler")),
            debug_info=bool(p.debug_info), expose_hidden=bool(p.expose_hidden),
            static_input=len(layer.bottom) > 2 + hidden,
        )

    @classmethod
    def layout(cls, a: RecurrentAttrs, bottoms: list[Shape]) -> RecurrentLayout:
        """Caffe's LayerSetUp/Reshape checks; raises ValueError with Caffe's reason."""
        if a.num_output <= 0:
            raise ValueError("num_output must be positive")
        hidden = len(cls.state_names) if a.expose_hidden else 0
        if not 2 + hidden <= len(bottoms) <= 3 + hidden:
            want = " and ".join(["x", "cont"] + [f"{s}_0" for s in cls.state_names][:hidden])
            raise ValueError(f"takes {want}, and optionally x_static (before the state); got {len(bottoms)} bottoms")
        x, cont = bottoms[0], bottoms[1]
        if len(x) < 3:
            # Caffe's check says 2 axes, but its x transform (an InnerProduct over axis 2) needs 3.
            raise ValueError(f"bottom[0] must have at least 3 axes (#timesteps, #streams, features...), got {list(x)}")
        steps, streams = x[0], x[1]
        if len(cont) != 2 or tuple(cont) != (steps, streams):
            raise ValueError(f"bottom[1] (cont) must be {steps}x{streams} (#timesteps, #streams), got {list(cont)}")
        static_dim = None
        if len(bottoms) > 2 + hidden:
            static = bottoms[2]
            if len(static) < 1 or static[0] != streams:
                raise ValueError(f"bottom[2] (x_static) must start with the {streams} streams, got {list(static)}")
            static_dim = count(static, 1)
        state = (1, streams, a.num_output)
        for name, shape in zip(cls.state_names, bottoms[len(bottoms) - hidden:]):
            if tuple(shape) != state:
                raise ValueError(f"{name}_0 must be {list(state)}, got {list(shape)}")
        return RecurrentLayout(steps, streams, count(x, 2), static_dim)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        lay = cls.layout(a, bottoms)
        want = 1 + (len(cls.state_names) if a.expose_hidden else 0)
        if num_tops != want:
            raise ValueError(f"needs exactly {want} top(s) (expose_hidden: {a.expose_hidden}), got {num_tops}")
        state = (1, lay.streams, a.num_output)
        return [(lay.steps, lay.streams, a.num_output)] + [state] * (want - 1)

    @classmethod
    def input_shapes(cls, a, lay: RecurrentLayout) -> list[Shape]:
        """W_x*, b_*, [W_x*_static]: the transforms applied to the inputs."""
        rows = cls.gates * a.num_output
        shapes = [(rows, lay.x_dim), (rows,)]
        if lay.static_dim is not None:
            shapes.append((rows, lay.static_dim))
        return shapes

    @classmethod
    def input_fillers(cls, a) -> list[Filler | None]:
        return [a.weight_filler, a.bias_filler] + ([a.weight_filler] if a.static_input else [])


@register("LSTM")
class LSTM(Recurrent):
    state_names = ("h", "c")
    gates = 4

    @classmethod
    def param_shapes(cls, a, bottoms):
        lay = cls.layout(a, bottoms)
        return cls.input_shapes(a, lay) + [(4 * a.num_output, a.num_output)]

    @classmethod
    def fillers(cls, a):
        return cls.input_fillers(a) + [a.weight_filler]

    @classmethod
    def macs(cls, a, bottoms, tops):
        lay = cls.layout(a, bottoms)
        h4 = 4 * a.num_output
        static = lay.streams * h4 * (lay.static_dim or 0)
        return lay.steps * lay.streams * (h4 * lay.x_dim + h4 * a.num_output) + static


@register("RNN")
class RNN(Recurrent):
    state_names = ("h",)

    @classmethod
    def param_shapes(cls, a, bottoms):
        lay = cls.layout(a, bottoms)
        h = a.num_output
        return cls.input_shapes(a, lay) + [(h, h), (h, h), (h,)]

    @classmethod
    def fillers(cls, a):
        return cls.input_fillers(a) + [a.weight_filler, a.weight_filler, a.bias_filler]

    @classmethod
    def macs(cls, a, bottoms, tops):
        lay = cls.layout(a, bottoms)
        h = a.num_output
        static = lay.streams * h * (lay.static_dim or 0)
        return lay.steps * lay.streams * (h * lay.x_dim + 2 * h * h) + static


@register("LSTMUnit")
class LSTMUnit(LayerSpec):
    """One LSTM step: bottoms c_{t-1} (1 x N x H), gate inputs (1 x N x 4H, packed i, f, o, g) and
    cont_t (1 x N); tops c_t and h_t (1 x N x H each)."""

    min_bottoms = 3
    max_bottoms = 3

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        c_prev, gates, cont = bottoms
        if len(c_prev) != 3 or len(gates) != 3 or len(cont) != 2:
            raise ValueError(f"bottoms must be 3-D, 3-D and 2-D, got {[list(b) for b in bottoms]}")
        streams = c_prev[1]
        if any(b[0] != 1 or b[1] != streams for b in bottoms):
            raise ValueError(f"every bottom must be 1 x {streams} x ... (one timestep), got "
                             f"{[list(b) for b in bottoms]}")
        if gates[2] != 4 * c_prev[2]:
            raise ValueError(f"the gate input must have 4 x {c_prev[2]} channels, got {gates[2]}")
        if num_tops != 2:
            raise ValueError(f"needs exactly 2 tops (c_t, h_t), got {num_tops}")
        return [tuple(c_prev), tuple(c_prev)]
