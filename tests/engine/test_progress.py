"""Progress lines: at the first iteration of an epoch, every PRINT_FREQ iterations and at least
every 30 s, with the ETA of the epoch and of the run, in train.log also under a progress bar."""
import logging

from tasks.engine.records import Progress, duration, make_logger


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def lines(caplog):
    return [r.getMessage() for r in caplog.records]


def test_first_iteration_then_every_30_seconds_with_etas(caplog):
    clock, log = Clock(), logging.getLogger("bsam.test_progress")
    progress = Progress(log, iters_per_epoch=100, end_epoch=3, print_freq=1000, clock=clock)
    with caplog.at_level(logging.INFO, logger="bsam.test_progress"):
        started = clock.now
        clock.now += 4.0
        progress.step(0, 1, started, 0.5, 0.01)  # the first iteration: always a line
        for it in range(2, 9):  # 4 s an iteration: the line after 30 s comes at iteration 9
            clock.now += 4.0
            progress.step(0, it, started, 0.5, 0.01)
        assert len(lines(caplog)) == 1
        clock.now += 4.0
        progress.step(0, 9, started, 0.25, 0.01)
    first, second = lines(caplog)
    assert first == "epoch 0 it 1/100 loss 0.5000 lr 0.01 | 4.00 s/it, epoch ETA 6m36s, run ETA 19m56s"
    assert second == "epoch 0 it 9/100 loss 0.2500 lr 0.01 | 4.00 s/it, epoch ETA 6m04s, run ETA 19m24s"


def test_print_freq_and_a_resumed_epoch(caplog):
    clock, log = Clock(), logging.getLogger("bsam.test_progress")
    progress = Progress(log, iters_per_epoch=10, end_epoch=1, print_freq=2, clock=clock)
    with caplog.at_level(logging.INFO, logger="bsam.test_progress"):
        started = clock.now
        for it in range(6, 9):  # resumed after iteration 5: the rate counts this run's iterations only
            clock.now += 1.0
            progress.step(0, it, started, 1.0, 0.1)
    assert [line.split(" |")[0].split(" loss")[0] for line in lines(caplog)] == ["epoch 0 it 6/10", "epoch 0 it 8/10"]
    assert lines(caplog)[-1].endswith("1.00 s/it, epoch ETA 2s, run ETA 2s")


def test_under_a_progress_bar_the_lines_go_to_the_log_file_only(tmp_path, capsys):
    log = make_logger(tmp_path, name="bsam.test_progress_file")
    Progress(log, 10, 1, 1).step(0, 1, 0.0, 1.0, 0.1, console=False)
    log.info("an epoch line")
    for handler in log.handlers:
        handler.flush()
    assert "epoch 0 it 1/10" in (tmp_path / "train.log").read_text()
    out = capsys.readouterr().out
    assert "an epoch line" in out and "epoch 0 it 1/10" not in out


def test_durations():
    assert [duration(s) for s in (0.4, 42, 425, 11520)] == ["0s", "42s", "7m05s", "3h12m"]
