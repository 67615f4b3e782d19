"""Count the collectives of a training step: every gradient bucket DDP all-reduces (through
a comm hook that then runs DDP's own all-reduce) and every ``torch.distributed.all_reduce``
called from Python (the optimizers' local-perturbation average), with their bytes.  For the
communication table and the tests that hold SAM.PERTURB local to one all-reduce a step."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch.distributed as dist

_ALL_REDUCE = dist.all_reduce  # the real one, also while python_all_reduces() counts


@dataclass
class CollectiveCounter:
    """``calls`` and ``bytes`` of all-reduces so far; :meth:`watch` a DDP model first."""
    calls: int = 0
    bytes: int = 0
    kinds: list[str] = field(default_factory=list)

    def watch(self, ddp_model) -> None:
        """Count DDP's gradient all-reduces (one per bucket per synchronised backward)."""
        def hook(state, bucket):  # what DDP does without a hook: the mean over the processes
            tensor = bucket.buffer()
            self._count("ddp bucket", tensor)
            tensor.div_(dist.get_world_size())
            work = _ALL_REDUCE(tensor, async_op=True)
            return work.get_future().then(lambda fut: fut.value()[0])
        ddp_model.register_comm_hook(None, hook)

    @contextlib.contextmanager
    def python_all_reduces(self):
        """Within the block, count ``torch.distributed.all_reduce`` calls too."""
        original = dist.all_reduce

        def counted(tensor, *args, **kwargs):
            self._count("all_reduce", tensor)
            return original(tensor, *args, **kwargs)

        dist.all_reduce = counted
        try:
            yield self
        finally:
            dist.all_reduce = original

    def _count(self, kind: str, tensor) -> None:
        self.calls += 1
        self.bytes += tensor.numel() * tensor.element_size()
        self.kinds.append(kind)
