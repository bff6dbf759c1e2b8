"""Deploy-prototxt writers for Caffe's recurrent layers: RNN, LSTM (``recurrent_param``) and LSTMUnit."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Writer = Callable[[Any, Any, Any, Any], None]


def recurrent_writers(put: Callable, put_always: Callable, write_filler: Callable) -> dict[str, Writer]:
    """``put`` / ``put_always`` are deploy.py's field setters, ``write_filler`` its filler writer."""

    def recurrent(layer, a, node, graph):
        p = layer.recurrent_param
        put_always(p, num_output=a.num_output)
        put(p, debug_info=a.debug_info, expose_hidden=a.expose_hidden)
        if a.weight_filler is not None:
            write_filler(p.weight_filler, a.weight_filler)
        if a.bias_filler is not None:
            write_filler(p.bias_filler, a.bias_filler)

    def nothing(layer, a, node, graph):
        return None

    return {"RNN": recurrent, "LSTM": recurrent, "LSTMUnit": nothing}
