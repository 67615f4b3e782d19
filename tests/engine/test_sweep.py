"""tools/sweep.py on tiny trials (one or a few iterations of ResNet-20 on generated 16x16
images): the report, a SIGKILL and a restart, two processes on one SQLite file, a trial of
a dead (or only stalled) machine, a failed trial, and the one-line errors of a bad --space,
--heartbeat or --grace."""
from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest

from reliability_helpers import one_error, run_main
from tasks.engine import config
from tasks.engine.sweep import ownership
from tasks.engine.sweep.space import parse_spaces
from tasks.engine.sweep.study import distributions, next_trial, open_study
from tasks.engine.sweep.trial import Outcome, record
from tools import sweep as sweep_tool

REPO = Path(__file__).resolve().parents[2]
SPACE = ["--space", "TRAIN.LR=log:0.01:0.5", "--space", "TRAIN.WD=float:0:0.01"]


@pytest.fixture
def sweep_cfg(tiny_cls_cfg):
    """``make(epochs) -> Path``: a config whose run is 1 iteration per epoch, judged on a
    quarter of the training images."""
    def make(epochs: int = 1) -> Path:
        return tiny_cls_cfg("tiny", TRAIN={"END_EPOCH": epochs, "MAX_ITERS_PER_EPOCH": 1, "LR_SCHEDULER": "constant"},
                            SAM={"METHOD": "none"}, DATASET={"VAL_FROM_TRAIN": 0.25})
    return make


def study_trials(out: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


def start(cfg: Path, out: Path, trials: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "tools/sweep.py", "--cfg", str(cfg), *SPACE, "--trials", str(trials),
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_four_trials_write_table_best_yaml_and_picture(sweep_cfg, tmp_path, capsys):
    cfg, out = sweep_cfg(), tmp_path / "sweep"
    code, err = run_main(sweep_tool.main, "--cfg", cfg, *SPACE, "--trials", 4, "--out", out, capsys=capsys)
    assert code == 0, err
    trials = study_trials(out)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # each an ordinary run folder, named after the study and the trial
        run = out / "trials" / "classification" / f"tiny_trial{t.number:03d}"
        assert {"config.yaml", "train.log", "metrics.csv", "results.json"} <= {p.name for p in run.iterdir()}
        assert "validation images" in (run / "train.log").read_text()
    table = (out / "report.md").read_text()
    assert "| trial | TRAIN.LR | TRAIN.WD | val_top1 | epochs | state |" in table
    assert table.count("| complete |") == 4 and "(best)" in table
    report = json.loads((out / "trials.json").read_text())
    best = max((t for t in trials), key=lambda t: t.value)
    assert report["best"]["value"] == best.value
    tuned = config.load(out / "best.yaml")  # what tools/train.py loads
    assert tuned.TRAIN.LR == pytest.approx(report["best"]["params"]["TRAIN.LR"])
    assert tuned.TRAIN.WD == pytest.approx(report["best"]["params"]["TRAIN.WD"])
    assert tuned.NAME == f"{report['best']['run']}_best" and tuned.OUTPUT_DIR == str(tmp_path / "out")
    assert (out / "sweep.png").stat().st_size > 10_000
    # --report trains nothing, and a finished study is not retrained when started again
    finished = {t.number: (out / "trials" / "classification" / f"tiny_trial{t.number:03d}" / "results.json").stat().st_mtime_ns
                for t in trials}
    for extra in (["--report"], []):
        code, err = run_main(sweep_tool.main, "--cfg", cfg, *SPACE, "--trials", 4, "--out", out, *extra, capsys=capsys)
        assert code == 0, err
    assert len(study_trials(out)) == 4
    assert finished == {n: (out / "trials" / "classification" / f"tiny_trial{n:03d}" / "results.json").stat().st_mtime_ns
                        for n in finished}


def test_sigkill_mid_trial_and_restart_count_every_trial_once(sweep_cfg, tmp_path):
    cfg, out = sweep_cfg(epochs=2), tmp_path / "sweep"
    second = out / "trials" / "classification" / "tiny_trial001"
    proc = start(cfg, out, trials=2)
    deadline = time.monotonic() + 300
    while not (second / "checkpoint_last.pth").is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # after trial 1's first epoch, before its last
    proc.communicate()
    assert not (second / "results.json").exists()
    first_done = (out / "trials" / "classification" / "tiny_trial000" / "results.json").stat().st_mtime_ns
    again = start(cfg, out, trials=2)
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log[-3000:]
    assert "[trial 1 of 2, resumed]" in log
    trials = study_trials(out)
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert "resumed from" in (second / "train.log").read_text()
    epochs = [line.split(",")[0] for line in (second / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]  # each epoch once, continued from the checkpoint
    assert (out / "trials" / "classification" / "tiny_trial000" / "results.json").stat().st_mtime_ns == first_done


def test_two_processes_on_one_sqlite_file_share_six_trials(sweep_cfg, tmp_path):
    cfg, out = sweep_cfg(), tmp_path / "sweep"
    procs = [start(cfg, out, trials=6) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [log[-2000:] for log in logs]
    ran = [{int(line.split()[1]) for line in log.splitlines() if line.startswith("[trial") and "of 6" in line}
           for log in logs]
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == set(range(6))
    trials = study_trials(out)
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # trained once: one start line in its log
        text = (out / "trials" / "classification" / f"tiny_trial{t.number:03d}" / "train.log").read_text()
        assert text.count("it/epoch") == 1


def test_a_failed_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(sweep_cfg, tmp_path, capsys):
    cfg, out = sweep_cfg(), tmp_path / "sweep"
    code, err = run_main(sweep_tool.main, "--cfg", cfg, "--space", "DATASET.TRAIN_SET=choice:train,gone",
                         "--sampler", "grid", "--trials", 5, "--out", out, capsys=capsys)
    assert code == 0, err
    states = {t.params["DATASET.TRAIN_SET"]: t for t in study_trials(out)}  # the grid holds 2 trials
    assert states["train"].state == optuna.trial.TrialState.COMPLETE
    assert states["gone"].state == optuna.trial.TrialState.FAIL
    assert "image folder not found" in states["gone"].user_attrs["reason"]
    assert "| fail: " in (out / "report.md").read_text()


@pytest.mark.parametrize("space, expected", [
    ("SAM.RHO=lg:0.01:0.1", ["--space 'SAM.RHO=lg:0.01:0.1'", "KEY=log:LOW:HIGH"]),
    ("SAM.RHO=log:0.1:0.01", ["SAM.RHO=log:0.1:0.01", "LOW must be below HIGH"]),
    ("SAM.RHO=log:0:0.1", ["a log range needs LOW > 0"]),
    ("SAM.RHOO=log:0.01:0.1", ["SAM.RHOO", "unknown key", "did you mean SAM.RHO?"]),
    ("TRAIN.END_EPOCH=float:1:3", ["TRAIN.END_EPOCH", "expected an integer"]),
    ("SAM.METHOD=choice:sam,bsamm", ["SAM.METHOD", "'bsamm' is not allowed"]),
])
def test_a_bad_space_is_one_line_naming_it(sweep_cfg, tmp_path, capsys, space, expected):
    out = tmp_path / "sweep"
    code, err = run_main(sweep_tool.main, "--cfg", sweep_cfg(), "--space", space, "--out", out, capsys=capsys)
    one_error(code, err, *expected)
    assert not out.exists()  # nothing written


def test_a_changed_definition_is_refused(sweep_cfg, tmp_path, capsys):
    cfg, out = sweep_cfg(), tmp_path / "sweep"
    code, err = run_main(sweep_tool.main, "--cfg", cfg, *SPACE, "--trials", 1, "--out", out, "--report", capsys=capsys)
    assert code == 0, err
    code, err = run_main(sweep_tool.main, "--cfg", cfg, "--space", "TRAIN.LR=log:0.01:0.1", "--out", out,
                         "--report", capsys=capsys)
    one_error(code, err, "study 'tiny'", "was created with space", "another --study")


def test_median_pruner_stops_a_trial_below_the_earlier_ones_and_skips_reported_epochs():
    from tasks.engine.sweep.trial import _pruning_hook, _Progress

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    first.report(90.0, 0)
    study.tell(first, 90.0)
    trial, progress = study.ask(), _Progress("val_top1", reported={0})
    hook = _pruning_hook(trial, progress)
    hook(0, {"val_top1": 10.0})  # held by Optuna already (a trial taken over): not reported again
    assert study.trials[1].intermediate_values == {} and progress.epochs == 1
    hook(1, {"train_loss": 1.0})  # an epoch without evaluation
    progress.reported.clear()
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 0"):
        hook(0, {"val_top1": 10.0})
    assert study.trials[1].intermediate_values == {0: 10.0}


ELSEWHERE = {"host": "elsewhere", "out": "/elsewhere/sweep", ownership.CLAIM: "theirs"}


def other_machine_trial(out: Path, heartbeat_age_s: int) -> optuna.trial.FrozenTrial:
    """A RUNNING trial as a sweep on another machine leaves it in the shared study: its
    parameters, host, folder and token, a heartbeat ``heartbeat_age_s`` old and no lock here."""
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    trial = study.ask(distributions(parse_spaces(SPACE[1::2])))
    for key, value in ELSEWHERE.items():
        trial.set_user_attr(key, value)
    study._storage.record_heartbeat(trial._trial_id)
    with sqlite3.connect(out / "study.db") as db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?",
                   (f"-{heartbeat_age_s} seconds", trial._trial_id))
    return study._storage.get_trial(trial._trial_id)


@pytest.mark.parametrize("heartbeat_age_s, taken_over", [(3600, True), (0, False)])
def test_a_trial_of_another_machine_is_taken_over_once_its_heartbeat_is_older_than_grace(
        sweep_cfg, tmp_path, capsys, heartbeat_age_s, taken_over):
    cfg, out = sweep_cfg(), tmp_path / "sweep"
    args = ("--cfg", cfg, *SPACE, "--trials", 2, "--out", out)
    assert run_main(sweep_tool.main, *args, "--report", capsys=capsys)[0] == 0  # the study, as others made it
    theirs = other_machine_trial(out, heartbeat_age_s)
    code, err = run_main(sweep_tool.main, *args, capsys=capsys)
    assert code == 0, err
    trials = study_trials(out)
    assert [t.number for t in trials] == [0, 1]  # every trial counted once, the budget exact
    assert trials[0].params == theirs.params
    ran = [t.number for t in trials if (out / "trials" / "classification" / f"tiny_trial{t.number:03d}").is_dir()]
    if taken_over:  # under its own number, started fresh in this folder, then finished here
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and ran == [0, 1]
        assert trials[0].user_attrs["host"] == socket.gethostname()
        assert trials[0].user_attrs["out"] == str(out.resolve())
        assert trials[0].user_attrs[ownership.CLAIM] != "theirs"
        assert (out / "report.md").read_text().count("| complete |") == 2
    else:  # alive: left to its machine
        assert trials[0].state == optuna.trial.TrialState.RUNNING and ran == [1]
        assert {k: trials[0].user_attrs[k] for k in ELSEWHERE} == ELSEWHERE
        assert trials[1].state == optuna.trial.TrialState.COMPLETE


def test_of_threads_racing_for_one_stale_trial_exactly_one_takes_it_each_time(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="race")
    trial = study.ask()
    trial_id, racers = trial._trial_id, 4
    stores = [optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
              for _ in range(racers)]
    old = None  # first a trial without a token (one INSERT wins), then swaps of the winner's token
    for round_ in range(8):
        start = threading.Barrier(racers)

        def contend(i: int) -> bool:
            start.wait()
            return ownership.swap_claim(stores[i], trial_id, old, f"round{round_}-racer{i}")

        with ThreadPoolExecutor(racers) as pool:
            won = list(pool.map(contend, range(racers)))
        assert sum(won) == 1, (round_, won)
        old = f"round{round_}-racer{won.index(True)}"
        assert study._storage.get_trial(trial_id).user_attrs[ownership.CLAIM] == old
    with sqlite3.connect(tmp_path / "study.db") as db:  # silent for an hour
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-3600 seconds')")
    start = threading.Barrier(racers)

    def notice_stale(i: int) -> bool:  # as other machines do: only while the heartbeat is old
        start.wait()
        return ownership.swap_claim(stores[i], trial_id, old, f"stale-racer{i}", grace=60)

    with ThreadPoolExecutor(racers) as pool:
        won = list(pool.map(notice_stale, range(racers)))
    assert sum(won) == 1, won
    old = f"stale-racer{won.index(True)}"
    assert not ownership.swap_claim(stores[0], trial_id, old, "again", grace=60)  # its heartbeat is fresh now
    study.tell(trial, 1.0)
    assert not ownership.swap_claim(stores[0], trial_id, old, "late")  # a finished trial stays as it is


def test_a_stalled_machine_that_comes_back_records_nothing_and_leaves_the_trial_to_its_new_owner(tmp_path):
    out = tmp_path / "sweep"
    (out / "locks").mkdir(parents=True)
    params = parse_spaces(SPACE[1::2])
    study = open_study(f"sqlite:///{out / 'study.db'}", "tiny", {"space": SPACE[1::2], "metric": "val_top1",
                       "direction": "maximize", "sampler": "tpe"}, None, None, heartbeat=60, grace=600)
    mine = next_trial(study, params, budget=1, out=out)
    trial_id = mine.trial._trial_id
    # another machine found the heartbeat stale and took the trial over under its number
    assert ownership.swap_claim(ownership.rdb(study), trial_id, mine.token, "theirs")
    study._storage.set_trial_user_attr(trial_id, "host", "elsewhere")
    from tasks.engine.sweep.trial import _ownership_hook, _Superseded
    with pytest.raises(_Superseded):  # the comeback's run stops at its next epoch
        _ownership_hook(mine)(0, {})
    lost = record(study, mine, Outcome(optuna.trial.TrialState.COMPLETE, 0.5, 1))
    assert lost.state is None and "elsewhere" in lost.lost and " runs it" in lost.lost
    assert study._storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING  # told nothing
    study.tell(optuna.Trial(study, trial_id), 0.9)  # the new owner finishes it
    lost = record(study, mine, Outcome(optuna.trial.TrialState.COMPLETE, 0.5, 1))
    assert " finished it" in lost.lost and "\n" not in lost.lost
    finished = study._storage.get_trial(trial_id)
    assert finished.value == 0.9 and "epochs" not in finished.user_attrs
    mine.release()


def test_a_trial_taken_over_while_it_trains_here_is_left_to_its_new_owner_and_the_sweep_goes_on(
        sweep_cfg, tmp_path, capsys, monkeypatch):
    cfg, out = sweep_cfg(), tmp_path / "sweep"
    owns = ownership.owns

    def taken_during_trial_0(trial, token):  # as if this machine had stalled past --grace
        if trial.number == 0 and trial.study._storage.get_trial(trial._trial_id).user_attrs["host"] != "elsewhere":
            assert ownership.swap_claim(ownership.rdb(trial.study), trial._trial_id, token, "theirs")
            trial.study._storage.set_trial_user_attr(trial._trial_id, "host", "elsewhere")
        return owns(trial, token)

    monkeypatch.setattr(ownership, "owns", taken_during_trial_0)
    code, err = run_main(sweep_tool.main, "--cfg", cfg, *SPACE, "--trials", 2, "--out", out, capsys=capsys)
    assert code == 0 and "Traceback" not in err, err
    first, second = study_trials(out)
    assert first.state == optuna.trial.TrialState.RUNNING and "epochs" not in first.user_attrs  # its owner's to tell
    assert first.user_attrs[ownership.CLAIM] == "theirs"
    assert second.state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize("extra, expected", [
    (["--heartbeat", "0"], ["--heartbeat 0", "at least 1"]),
    (["--grace", "30"], ["--grace 30", "at least twice --heartbeat (60 s)"]),
    (["--heartbeat", "5", "--grace", "9"], ["--grace 9", "twice --heartbeat (5 s)", "e.g. 50"]),
])
def test_a_bad_heartbeat_or_grace_is_one_line_naming_it(sweep_cfg, tmp_path, capsys, extra, expected):
    out = tmp_path / "sweep"
    code, err = run_main(sweep_tool.main, "--cfg", sweep_cfg(), *SPACE, "--out", out, *extra, capsys=capsys)
    one_error(code, err, *expected)
    assert not out.exists()
