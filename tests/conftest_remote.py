"""Fixtures for tests/test_remote.py (imported there; not a conftest.py of its own).

* ``sshd`` / ``sshd2``: throwaway OpenSSH servers on 127.0.0.1 (see tests/sshd.py), stopped at the
  end of the session even when tests fail. A missing /usr/sbin/sshd FAILS with an install hint.
* ``device_python``: a separate "device" Python: a venv with numpy + onnxruntime but no torch and
  no edgeattn, cached across sessions under .pytest_cache (keyed by the Python version).
* ``device_python_no_ort``: the same with numpy only (for the preflight test).
* ``models``: a tiny valid .onnx (MatMul/Softmax) and a corrupt one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sshd import SSHD, require_openssh, write_combined_config

__all__ = [
    "both_config",
    "device_python",
    "device_python_no_ort",
    "models",
    "sshd",
    "sshd2",
    "tiny_model",
]

DEVICE_ENV_TAG = "v1"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    require_openssh()  # fails (does not skip) with "apt-get install openssh-server"
    server = SSHD(tmp_path_factory.mktemp("sshd1"), "dev")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sshd2(tmp_path_factory: pytest.TempPathFactory):
    require_openssh()
    server = SSHD(tmp_path_factory.mktemp("sshd2"), "dev2")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def both_config(sshd: SSHD, sshd2: SSHD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_combined_config(tmp_path_factory.mktemp("cfg") / "ssh_config", [sshd, sshd2])


def _make_venv(root: Path, packages: list[str], probe: str) -> Path:
    """A cached venv at ``root`` with ``packages``; rebuilt when ``probe`` fails in it."""
    py = root / "bin" / "python3"
    marker = root / ".edgeattn-ok"
    if marker.exists() and py.exists():
        ok = subprocess.run([str(py), "-I", "-c", probe], capture_output=True, check=False)
        if ok.returncode == 0:
            return py
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    # the base interpreter, not the project venv: the device env must not see torch or edgeattn
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(root)], check=True, capture_output=True)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", *packages],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"pip install {packages} for the device env failed:\n{res.stderr[-2000:]}"
        )
    subprocess.run([str(py), "-I", "-c", probe], check=True)
    marker.write_text("ok\n")
    return py


def _env_root(pytestconfig: pytest.Config, name: str) -> Path:
    ver = "".join(map(str, sys.version_info[:2]))
    cache = getattr(pytestconfig, "cache", None)  # None with -p no:cacheprovider
    base = (
        Path(cache.mkdir("edgeattn-device"))
        if cache is not None
        else Path(tempfile.gettempdir()) / "edgeattn-device-envs"
    )
    return base / f"{name}-py{ver}-{DEVICE_ENV_TAG}"


@pytest.fixture(scope="session")
def device_python(pytestconfig: pytest.Config) -> str:
    probe = (
        "import numpy, onnxruntime, importlib.util as u, sys; "
        "sys.exit(1 if u.find_spec('torch') or u.find_spec('edgeattn') else 0)"
    )
    return str(_make_venv(_env_root(pytestconfig, "ort"), ["numpy", "onnxruntime"], probe))


@pytest.fixture(scope="session")
def device_python_no_ort(pytestconfig: pytest.Config, device_python: str) -> str:
    """numpy but no onnxruntime: numpy is hard-linked from the full env (no second pip run)."""
    probe = (
        "import numpy, importlib.util as u, sys; "
        "sys.exit(1 if u.find_spec('onnxruntime') or u.find_spec('torch') else 0)"
    )
    root = _env_root(pytestconfig, "no-ort")
    py = root / "bin" / "python3"
    marker = root / ".edgeattn-ok"
    if marker.exists() and py.exists():
        if subprocess.run([str(py), "-I", "-c", probe], capture_output=True).returncode == 0:
            return str(py)
    shutil.rmtree(root, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True)
    site = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    src = Path(
        subprocess.run(
            [device_python, "-I", "-c", site], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    dst = Path(
        subprocess.run(
            [str(py), "-I", "-c", site], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    for entry in src.iterdir():
        if entry.name.split("-")[0].split(".")[0] == "numpy":
            shutil.copytree(entry, dst / entry.name, copy_function=os.link)
    subprocess.run([str(py), "-I", "-c", probe], check=True)
    marker.write_text("ok\n")
    return str(py)


def tiny_model(path: Path, n: int = 8, d: int = 16) -> Path:
    """x (B, n, d) -> softmax((x W) x^T): MatMul, Transpose, MatMul, Softmax."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", n, d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", n, n])
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((d, d)).astype(np.float32), "w"
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["q"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "xt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "tiny_attention", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    tiny_model(d / "tiny.onnx")
    (d / "bad.onnx").write_bytes(b"this is not an onnx model\n" * 10)
    return d
