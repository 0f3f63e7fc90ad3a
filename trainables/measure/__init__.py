"""Measuring a model for real: the ONNX export, the latency backends and the B stage's metrics.

Imports the base modules and :mod:`trainables.compress` only (``tests/test_layers.py``).
"""
