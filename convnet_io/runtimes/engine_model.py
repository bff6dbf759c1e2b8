"""convnet's ONNX export handed to the engines without copies of its weights.

``export_onnx`` puts every weight into the model as a TensorProto, and an engine session is then
built from the serialised bytes: for AlexNet's 244 MB that is five copies (``tobytes``, the graph's
initialiser list, the model copy with the wanted outputs, the serialisation, the engine's parse),
each a fresh 244 MB of pages, about 1.5 s of the 3.6 s ``convnet run`` spent before its first image.
An :class:`EngineModel` is the export without its large float initialisers (``build_model`` with
``defer_weights``) plus those weights as the NumPy arrays they already are. Each engine gets them
the way it can take memory it does not own:

* OpenVINO reads the small model with the weights declared as typed inputs, and each such input is
  then replaced by an ``ov.op.Constant`` over the array's own memory (``shared_memory=True``);
* ONNX Runtime reads the small model with one placeholder initialiser per weight (the name, the
  dims, data "external") and is given the arrays as ``OrtValue`` views through
  ``SessionOptions.add_external_initializers``;
* what needs one self-contained model (the int8 quantizer) gets it serialised once, each weight's
  bytes written once (``onnx_export.writer``'s records).

The arrays must stay alive and unchanged while a session built from them exists: each session
keeps a reference to its ``EngineModel``, and ``Net`` drops its sessions when its weights change.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_LE_F32 = np.dtype("<f4")


@dataclass
class EngineModel:
    model: object  # onnx.ModelProto without the weights
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)

    @classmethod
    def export(cls, graph, blobs: dict[str, list[np.ndarray]]) -> EngineModel:
        from convnet_io.onnx_export.exporter import build_model

        model, deferred = build_model(graph, blobs, defer_weights=True)
        # the engines take the arrays' memory as it is: float32, little-endian, C order, writable
        # (OpenVINO will not alias a read-only array); a copy only where one of these fails
        weights = [(name, a if _aliasable(a) else np.array(a, dtype=_LE_F32, order="C")) for name, a in deferred]
        return cls(model, weights)

    def with_outputs(self, names) -> EngineModel:
        """The same model computing exactly ``names`` (the weights shared, not copied)."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        del model.graph.output[:]
        model.graph.output.extend(onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None) for v in names)
        return EngineModel(model, self.weights)

    def weight_names(self) -> set[str]:
        return {n for n, _ in self.weights}

    def with_weights_as_inputs(self) -> bytes:
        """The small model with each weight a typed graph input (OpenVINO's form)."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        model.graph.input.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(a.shape))
                                 for n, a in self.weights)
        return model.SerializeToString()

    def with_placeholders(self) -> bytes:
        """The small model with one external-data placeholder initialiser per weight (ONNX
        Runtime's form: ``add_external_initializers`` replaces initialisers it finds by name)."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        for name, array in self.weights:
            t = model.graph.initializer.add(name=name, dims=list(array.shape), data_type=onnx.TensorProto.FLOAT)
            t.data_location = onnx.TensorProto.EXTERNAL
            t.external_data.add(key="location", value="convnet-engine-weights")
        return model.SerializeToString()

    def serialized(self) -> bytes:
        """One self-contained ONNX model: the small model, then each weight as an initialiser record."""
        from convnet_io.onnx_export.writer import model_chunks

        return b"".join(model_chunks(self.model, self.weights))


def _aliasable(a: np.ndarray) -> bool:
    return a.dtype == _LE_F32 and a.flags.c_contiguous and a.flags.writeable and a.flags.aligned


def replace_weight_inputs(ov_model, weights: list[tuple[str, np.ndarray]]) -> None:
    """Replace each of ``ov_model``'s parameters named after a weight by a constant over that
    array's memory."""
    import openvino as ov

    arrays = dict(weights)
    for param in list(ov_model.get_parameters()):
        array = arrays.get(param.get_friendly_name())
        if array is None:
            continue
        const = ov.op.Constant(array, shared_memory=True)
        param.output(0).replace(const.output(0))
        ov_model.remove_parameter(param)
    ov_model.validate_nodes_and_infer_types()


def external_initializers(opts, weights: list[tuple[str, np.ndarray]]) -> None:
    """Hand ``weights`` to an ONNX Runtime session's options as views of the arrays."""
    import onnxruntime as ort

    if weights:
        opts.add_external_initializers([n for n, _ in weights],
                                       [ort.OrtValue.ortvalue_from_numpy(a) for _, a in weights])
