"""A net read for building only, where most layers are not protobuf messages.

A LayerParameter message costs about 850 bytes however few of its 76 fields are set, so a
700,000-layer prototxt held as one NetParameter takes 600 MB before the graph exists. Here a layer
holding nothing but a name, a type, bottoms and tops is a tuple: ``(name, type, bottom, top)`` of
four strings when it has exactly those four fields once each (the common form), else ``(name,
type, bottoms, tops)`` with tuples of blob names and ``None`` for a name or type not given. Every
other layer stays a message; the net's own fields (and those messages) are a NetParameter,
``head``. ``build_graph`` takes either form; anything else can ask for the NetParameter itself
(``net_parameter()``), the same message the text gives."""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

from convnet_io.caffe.proto import caffe_pb2


class PlainNet:
    __slots__ = ("head", "layer")  # layer: tuples and LayerParameter messages, in file order

    def __init__(self, head: caffe_pb2.NetParameter, layers: list[Any]):
        self.head, self.layer = head, layers

    @property
    def name(self) -> str:
        return self.head.name

    @property
    def state(self) -> Any:
        return self.head.state

    def messages(self) -> Iterator[Any]:
        """Every layer as a LayerParameter, in order."""
        for layer in self.layer:
            yield layer_message(layer) if type(layer) is tuple else layer

    def net_parameter(self) -> caffe_pb2.NetParameter:
        net = caffe_pb2.NetParameter()
        net.CopyFrom(self.head)
        net.ClearField("layer")
        for layer in self.messages():
            net.layer.add().CopyFrom(layer)
        return net


def layer_message(layer: tuple) -> caffe_pb2.LayerParameter:
    """The LayerParameter a plain layer tuple stands for."""
    name, type_, bottom, top = layer
    if type(bottom) is str:
        bottom, top = (bottom,), (top,)
    msg = caffe_pb2.LayerParameter(bottom=bottom, top=top)
    if name is not None:
        msg.name = name
    if type_ is not None:
        msg.type = type_
    return msg


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Reading and building a large net allocate millions of objects and no reference cycles:
    the cyclic collector would walk all of them again and again (a third of the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] > _FREEZE_FROM:
            # millions of new objects (a huge graph, long-lived): the next collection would walk
            # them all, and again when they age; they are set aside from the collector instead
            gc.freeze()
        if was:
            gc.enable()


_FREEZE_FROM = 1_000_000  # new container objects: a net of some 300k layers
