"""COCO human pose estimation (SimpleBaseline) as a task of the shared engine.

The package itself imports nothing, so that :mod:`tasks.pose.onnx_decode` loads with NumPy
and onnxruntime alone; the task registers when :mod:`tasks.pose.task` is imported (the
engine's ``TASK_MODULES`` names it).
"""


def __getattr__(name: str):
    if name == "PoseTask":
        from .task import PoseTask

        return PoseTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PoseTask"]
