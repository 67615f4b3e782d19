"""A torchrun worker for the distributed tests: runs ``tools/train.py`` with its arguments and

* records the device of every tensor handed to a ``torch.distributed`` collective, written
  at exit to ``$RECORD_DIR/rank<R>.json`` (object collectives are recorded without tensors);
* with ``STOP_RANK`` and ``STOP_STEP`` set, sends SIGTERM to that one rank's own process
  during training step ``STOP_STEP`` (1-based), as ``kill`` from a shell would.
"""
import atexit
import json
import os
import runpy
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "gather", "reduce",
               "reduce_scatter", "reduce_scatter_tensor", "scatter", "all_to_all", "all_to_all_single",
               "all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list")
records: list = []


def tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)


def recording(name, collective):
    def call(*args, **kwargs):
        devices = {str(t.device) for t in tensors_in([*args, *kwargs.values()])}
        records.append([name, sorted(devices)])
        return collective(*args, **kwargs)
    return call


for name in COLLECTIVES:
    setattr(dist, name, recording(name, getattr(dist, name)))


@atexit.register
def write_records():
    out = Path(os.environ["RECORD_DIR"]) / f"rank{os.environ['RANK']}.json"
    out.write_text(json.dumps(records))


if "STOP_STEP" in os.environ:
    from tasks.engine.trainer import Trainer

    train_step = Trainer._train_step

    def step_then_signal(self, batch):
        out = train_step(self, batch)
        if self.rank == int(os.environ["STOP_RANK"]) and self.global_step + 1 == int(os.environ["STOP_STEP"]):
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    Trainer._train_step = step_then_signal

sys.argv = [str(REPO / "tools" / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
