"""Defaults that more than one room reads (the CLI, bench, export), each declared once here.

Stdlib-free constants only: importing this costs nothing and pulls in no torch or onnx.
"""

#: The ONNX opset an export writes unless told otherwise (``--opset``): exact, never silently
#: another; 17 runs on every ONNX Runtime >= 1.14 and the TorchScript exporter writes it.
OPSET = 17
