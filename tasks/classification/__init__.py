"""Image classification (CIFAR and transfer learning on image folders); registers TASK: classification."""
from .task import ClassificationTask

__all__ = ["ClassificationTask"]
