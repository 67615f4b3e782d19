"""COCO human pose estimation (SimpleBaseline) as a task of the shared engine."""
from .task import PoseTask

__all__ = ["PoseTask"]
