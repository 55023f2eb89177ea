"""Attention mechanisms, one per file, pure ``nn.Module`` (no I/O, no onnx)."""
