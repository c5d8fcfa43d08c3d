"""ONNX export of every phi runs in ONNX Runtime and matches PyTorch."""
import io

import numpy as np
import pytest
import torch

from yolo_attn.models import build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

OPSET = 13


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated, not gone
@pytest.mark.parametrize("phi", [0, 1, 2, 3, 4, 5])
def test_onnx_export_matches_pytorch(phi):
    torch.manual_seed(phi)
    model = build_model(phi, num_classes=20).eval()
    x = torch.rand(1, 3, 160, 160)
    buffer = io.BytesIO()
    # dynamo=False: the TorchScript exporter is quick and needs nothing more; the torch.export-based one
    # also needs onnxscript, which is not among our dependencies
    torch.onnx.export(model, (x,), buffer, opset_version=OPSET, dynamo=False,
                      input_names=["images"], output_names=["p5", "p4"])
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET

    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        reference = [t.numpy() for t in model(x)]
    assert [o.shape for o in outputs] == [(1, 75, 5, 5), (1, 75, 10, 10)]
    for out, ref in zip(outputs, reference):
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
