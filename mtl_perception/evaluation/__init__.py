"""Offline evaluation of checkpoints on datasets (plain PyTorch, no ROS).

:func:`evaluate` scores a :class:`~mtl_perception.predictor.Predictor` on a dataset;
``mtl-eval`` (:mod:`mtl_perception.evaluation.cli`) is its command line.
"""

from .evaluate import ClassMismatchError, EvaluationError, evaluate
from .report import latency_summary

__all__ = ["ClassMismatchError", "EvaluationError", "evaluate", "latency_summary"]
