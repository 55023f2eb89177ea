"""Package-level guarantees a user depends on: cheap import, registry errors, CLI basics."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_edgeattn_does_not_import_torch_or_onnx():
    r = _run(
        "import sys, edgeattn; import edgeattn.errors;"
        "bad=[m for m in ('torch','onnx','onnxruntime') if m in sys.modules]; print(bad); assert not bad, bad"
    )
    assert r.returncode == 0, r.stderr + r.stdout


def test_lazy_attribute_resolves():
    r = _run("import edgeattn; print(len(edgeattn.list_models()) > 0)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_unknown_model_suggests_close_matches():
    from edgeattn.errors import ModelError
    from edgeattn.models import create_model

    with pytest.raises(ModelError, match=r"unknown model 'sima_tiny_12_p61'.*sima_tiny_12_p16"):
        create_model("sima_tiny_12_p61")


def test_unknown_override_lists_valid_options():
    from edgeattn.errors import ModelError
    from edgeattn.models import create_model

    with pytest.raises(ModelError, match=r"unknown override 'tokns'.*tokens"):
        create_model("block_msa", tokns=16)


def test_block_config_rejects_bad_values():
    from edgeattn.errors import ModelError
    from edgeattn.models import create_model

    with pytest.raises(ModelError, match="dim=100 is not divisible by heads=6"):
        create_model("block_msa", dim=100, heads=6)
    with pytest.raises(ModelError, match="tokens=1000 is not a square"):
        create_model("block_soft", tokens=1000)


def test_cli_list_and_unknown_command():
    exe = [sys.executable, "-m", "edgeattn.cli"]
    r = subprocess.run([*exe, "list", "block_*"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "block_sima" in r.stdout
    r = subprocess.run([*exe, "frobnicate"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
