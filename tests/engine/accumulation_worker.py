"""A torchrun worker for the accumulation tests: trains each config given on the command line,
one after the other in one process group (one launch for several runs), ``--resume``
continuing each from its checkpoint.

With ``STOP_RANK`` and ``STOP_LOSS_CALL`` set, that rank sends SIGTERM to its own process
during its ``STOP_LOSS_CALL``-th loss computation (1-based, counted over micro-batches and
passes): a signal in the middle of an accumulation cycle.  Exit status 3 when a run stopped.
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.engine import config, distributed  # noqa: E402
from tasks.engine.trainer import Trainer  # noqa: E402


def signal_on_loss_call(run: Trainer, call: int) -> None:
    loss, calls = run.task.loss, []

    def counted(net, batch):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(net, batch)

    run.task.loss = counted


def fit_all(paths: list, resume: bool) -> int:
    for path in paths:
        run = Trainer(config.load(Path(path)), resume=resume)
        if "STOP_LOSS_CALL" in os.environ and run.rank == int(os.environ["STOP_RANK"]):
            signal_on_loss_call(run, int(os.environ["STOP_LOSS_CALL"]))
        if run.fit().get("stopped"):
            return 3
    return 0


def main() -> int:
    """The group is left in order when stopped too, as tools/train.py does: a process that
    exits with its gloo group alive can abort in the group's teardown (SIGABRT, not status 3).
    After an error torchrun ends the other ranks, so no barrier is waited for then."""
    status = fit_all([a for a in sys.argv[1:] if a != "--resume"], "--resume" in sys.argv)
    distributed.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
