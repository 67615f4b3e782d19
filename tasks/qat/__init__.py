"""Quantization-aware training of classifiers (registers TASK: qat); reuses classification."""
from .task import QatTask

__all__ = ["QatTask"]
