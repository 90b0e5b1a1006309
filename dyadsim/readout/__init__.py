"""Readout and comparison stage: gradients out of relaxed states, and how close they are."""

from ._compare import Comparison, TensorMetrics, angle, compare

__all__ = ["compare", "Comparison", "TensorMetrics", "angle"]
