"""The pure core: windows, the alert decision with its debounce, threshold rules and detection metrics.

Arrays in, numbers out: no I/O, no torch, no ONNX Runtime. Every other layer calls it.
"""
