"""A net read for building only, where most layers are not protobuf messages.

A LayerParameter message costs about 850 bytes however few of its 76 fields are set, so a
700,000-layer prototxt held as one NetParameter takes 600 MB before the graph exists. Here a layer
holding nothing but a name, a type, bottoms and tops is the tuple ``(name, type, bottoms, tops)``
(``None`` for a name or type not given); every other layer stays a message, and the net's own
fields are a NetParameter (``head``) without layers. ``build_graph`` takes either form; anything
else can ask for the NetParameter itself (``net_parameter()``), which is the same message the
text gives."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from convnet_io.caffe.proto import caffe_pb2


class PlainNet:
    __slots__ = ("head", "layer")

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
    msg = caffe_pb2.LayerParameter(bottom=bottom, top=top)
    if name is not None:
        msg.name = name
    if type_ is not None:
        msg.type = type_
    return msg
