"""``deployment.resize`` against ONNX Runtime's ``Resize`` (every ``coordinate_transformation_mode``, up and down,
output sides of 1), and what torch's ONNX exporter writes for ``F.interpolate(mode="bilinear")``.

ONNX Runtime is an independent implementation of the ONNX specification. The check needs the ``crosscheck`` extra
(``pip install -e '.[crosscheck]'``); without it the test is skipped with the reason, and fails under CI=true.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explainer import deployment as Dep
from tests.crosscheck import require

onnx = require("onnx", module_level=True)
ort = require("onnxruntime", module_level=True)
from onnx import TensorProto, helper  # noqa: E402

SIZES = [(1, 1), (1, 5), (2, 3), (4, 7), (7, 4), (9, 13), (13, 9), (6, 1), (16, 16)]


def _ort_resize(x: np.ndarray, size, mode: str, opset: int = 13) -> np.ndarray:
    """A one-node ONNX model: Resize(mode="linear", coordinate_transformation_mode=mode) to ``size``, run in ORT."""
    n, c, h, w = x.shape
    node = helper.make_node("Resize", ["X", "roi", "scales", "sizes"], ["Y"], mode="linear",
                            coordinate_transformation_mode=mode)
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("roi", TensorProto.FLOAT, [0], []),
                     helper.make_tensor("scales", TensorProto.FLOAT, [0], []),
                     helper.make_tensor("sizes", TensorProto.INT64, [4], [n, c, *size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})[0]


@pytest.mark.parametrize("mode", Dep.RESIZE_MODES)
@pytest.mark.parametrize("in_size", [(5, 8), (1, 6), (12, 3)])
@pytest.mark.parametrize("out_size", SIZES)
def test_resize_equals_onnxruntime(mode, in_size, out_size):
    x = torch.rand(1, 2, *in_size, generator=torch.Generator().manual_seed(hash((in_size, out_size)) % 1000))
    got = Dep.resize(x, out_size, mode)
    ref = _ort_resize(x.numpy(), out_size, mode)
    np.testing.assert_allclose(got.numpy(), ref, atol=2e-6, rtol=0)


def test_pytorch_half_pixel_differs_from_pytorch_only_at_side_one():
    x = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    torch_out = F.interpolate(x, (1, 3), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(_ort_resize(x.numpy(), (1, 3), "half_pixel"), torch_out, atol=2e-6, rtol=0)
    assert np.abs(_ort_resize(x.numpy(), (1, 3), "pytorch_half_pixel") - torch_out).max() > 0.01
    torch_out = F.interpolate(x, (2, 3), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(_ort_resize(x.numpy(), (2, 3), "pytorch_half_pixel"), torch_out, atol=2e-6, rtol=0)


@pytest.mark.parametrize("opset", [11, 16])
def test_torch_exporter_writes_half_pixel(opset, tmp_path):
    class Up(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=(1, 3), mode="bilinear", align_corners=False)

    x = torch.rand(1, 1, 6, 8, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "up.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Up(), (x,), str(path), opset_version=opset, dynamo=False)
    model = onnx.load(str(path))
    modes = [helper.get_attribute_value(a).decode() for n in model.graph.node if n.op_type == "Resize"
             for a in n.attribute if a.name == "coordinate_transformation_mode"]
    assert modes == ["half_pixel"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, Up()(x).numpy(), atol=2e-6, rtol=0)    # side 1 included
