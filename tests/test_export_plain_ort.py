"""An exported file is usable by a plain onnxruntime.InferenceSession, with neither edgeattn nor
torch nor onnx importable in that process (what a user ships to a device): at every precision
(fp16 with float32 I/O, int8 dynamic and int8 static QDQ files included)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from edgeattn.export import export_onnx

PLAIN = r"""
import sys
for name in ("edgeattn", "torch", "onnx"):
    sys.modules[name] = None  # any import of these now fails
import numpy as np, onnxruntime as ort
path, x_path = sys.argv[1:3]
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
[y] = sess.run(None, {sess.get_inputs()[0].name: np.load(x_path)})
np.save(sys.argv[3], y)
"""


@pytest.mark.parametrize(
    "precision",
    # int8-static (9 s) is verified in test_precision's default cases; plain ORT runs it under -m slow
    ["fp32", "fp16", "int8-dynamic", pytest.param("int8-static", marks=pytest.mark.slow)],
)
def test_exported_net_runs_in_plain_onnxruntime(tmp_path, precision):
    res = export_onnx(
        "sima_nano_12_p16",
        img_size=64,
        opset=17,
        precision=precision,
        output=tmp_path / "m.onnx",
    )
    # export_onnx itself checked ORT against PyTorch on this file:
    assert res.verification["passed"]
    if precision != "fp32":
        assert res.spec["precision"] == precision
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            PLAIN,
            str(res.path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert y.shape == (1, 1000)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
