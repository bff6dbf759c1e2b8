"""SPP, BatchReindex, Filter and HDF5Output: PyTorch and ONNX Runtime against float64 NumPy
transcriptions of Caffe's ``spp_layer.cpp`` (its Pooling layers' loops), ``batch_reindex_layer.cpp``,
``filter_layer.cpp`` and ``hdf5_output_layer.cpp``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import graph_from_text, input_layer, rel_err
from test_onnx_export import check_ref, export_case

FLT_MAX = float(np.finfo(np.float32).max)


def caffe_pool(x, method, kernel, stride, pad):
    """PoolingLayer::Forward_cpu with Caffe's output size (ceil, then the clip rule when padded)."""
    n, c, h, w = x.shape
    out = []
    for i, size in enumerate((h, w)):
        o = int(math.ceil((size + 2 * pad[i] - kernel[i]) / stride[i])) + 1
        if pad[i] and (o - 1) * stride[i] >= size + pad[i]:
            o -= 1
        out.append(o)
    y = np.zeros((n, c, *out))
    for ph in range(out[0]):
        for pw in range(out[1]):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            if method == "MAX":
                y[:, :, ph, pw] = np.maximum(win.reshape(n, c, -1).max(-1, initial=-FLT_MAX), -FLT_MAX)
            else:
                y[:, :, ph, pw] = win.reshape(n, c, -1).sum(-1) / size
    return y


def spp_ref(x, height, method):
    levels = []
    for level in range(height):
        bins = 2 ** level
        k = [int(math.ceil(s / bins)) for s in x.shape[2:]]
        p = [(k[i] * bins - x.shape[2 + i] + 1) // 2 for i in range(2)]
        levels.append(caffe_pool(x, method, k, k, p))
    if height == 1:
        return levels[0]
    return np.concatenate([lv.reshape(x.shape[0], -1) for lv in levels], axis=1)


@pytest.mark.parametrize("height,method,hw", [(1, "MAX", (5, 7)), (3, "MAX", (13, 11)), (3, "AVE", (13, 11)),
                                              (2, "AVE", (6, 9)), (4, "MAX", (16, 24))])
def test_spp(tmp_path, height, method, hw):
    x = np.random.default_rng(1).standard_normal((2, 3, *hw)).astype(np.float32)
    case = export_case(tmp_path, f'layer {{ name: "spp" type: "SPP" bottom: "data" top: "spp" '
                                 f'spp_param {{ pyramid_height: {height} pool: {method} }} }}', {"data": x})
    check_ref(case, {"spp": spp_ref(x.astype(np.float64), height, method)})


def test_spp_level_too_fine_is_refused_like_caffe():
    from convnet_io.errors import LayerError

    # 3 rows, 4 bins: kernel 1, pad 1 -- Caffe's Pooling CHECK_LT(pad_h, kernel_h) fails.
    with pytest.raises(LayerError, match="pyramid level 2"):
        graph_from_text(input_layer((1, 1, 3, 3)) + 'layer { name: "spp" type: "SPP" bottom: "data" top: "spp" '
                        'spp_param { pyramid_height: 3 } }')


def test_batch_reindex(tmp_path):
    x = np.random.default_rng(2).standard_normal((4, 3, 2)).astype(np.float32)
    permut = np.array([3, 0, 0, 2.9, 1], dtype=np.float32)  # static_cast<int>: 2.9 -> 2
    case = export_case(tmp_path, 'layer { name: "r" type: "BatchReindex" bottom: "data" bottom: "permut" top: "r" }',
                       {"data": x, "permut": permut})
    check_ref(case, {"r": x.astype(np.float64)[[3, 0, 0, 2, 1]]})
    # Backward: Caffe accumulates top diffs into the rows they came from.
    from convnet_io.torch_model.registry import convert_node

    graph = case.net.graph
    module = convert_node(graph.nodes[-1], graph)
    xt = torch.tensor(x, requires_grad=True)
    g = np.random.default_rng(3).standard_normal((5, 3, 2))
    module(xt, torch.tensor(permut)).backward(torch.tensor(g, dtype=torch.float32))
    want = np.zeros_like(x, dtype=np.float64)
    for i, j in enumerate([3, 0, 0, 2, 1]):
        want[j] += g[i]
    assert rel_err(xt.grad.numpy(), want) <= 1e-6


def test_filter_rows_torch_and_onnx(tmp_path):
    import convnet_io
    from convnet_io.onnx_export import check_onnx, export_onnx
    from convnet_io.runtimes.onnxruntime_session import make_session

    a = np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32)
    b = np.random.default_rng(5).standard_normal((5, 2, 2)).astype(np.float32)
    sel = np.array([1, 0, 0.5, 0, -2], dtype=np.float32).reshape(5, 1)  # any non-zero float selects
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer(a.shape, "a") + input_layer(b.shape, "b") + input_layer(sel.shape, "sel")
                    + 'layer { name: "f" type: "Filter" bottom: "a" bottom: "b" bottom: "sel" top: "fa" top: "fb" }')
    net = convnet_io.load(path)
    assert net.graph.shapes["fa"] == (5, 3)  # Caffe's set-up shape: every row
    feeds = {"a": a, "b": b, "sel": sel}
    got = net.run_values(feeds, ["fa", "fb"])
    rows = [0, 2, 4]
    assert rel_err(got["fa"], a.astype(np.float64)[rows]) == 0 and rel_err(got["fb"], b.astype(np.float64)[rows]) == 0
    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    out = {o.name: o for o in model.graph.output}
    assert out["fa"].type.tensor_type.shape.dim[0].dim_param == "f_rows"
    session = make_session(model.SerializeToString(), "cpu")
    fa, fb = session.run(["fa", "fb"], feeds)
    assert fa.shape == (3, 3) and rel_err(fa, a[rows]) == 0 and rel_err(fb, b[rows]) == 0


def test_hdf5_output_writes_its_bottoms(tmp_path):
    import h5py

    import convnet_io

    target = tmp_path / "out.h5"
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((3, 2, 2, 2), "data") + input_layer((3,), "label")
                    + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4 } }'
                    + f'layer {{ name: "out" type: "HDF5Output" bottom: "ip" bottom: "label" '
                      f'hdf5_output_param {{ file_name: "{target}" }} }}')
    net = convnet_io.load(path, backend="torch")
    x = np.random.default_rng(6).standard_normal((3, 2, 2, 2)).astype(np.float32)
    label = np.array([1, 0, 2], dtype=np.float32)
    ip = net.forward({"data": x, "label": label}, blobs=["ip"])["ip"]
    with h5py.File(target, "r") as f:
        assert f["data"].shape == (3, 4) and f["label"].shape == (3,)
        w, bias = (np.float64(v) for v in net.blobs()["ip"])
        assert rel_err(f["data"][()], x.reshape(3, -1) @ w.T + bias) <= 1e-6
        assert np.array_equal(f["label"][()], label)
        assert np.array_equal(f["data"][()], ip)
