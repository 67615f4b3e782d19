"""tools/sweep.py on tiny trials (one or a few iterations of ResNet-20 on generated 16x16
images): the report, a SIGKILL and a restart, two processes on one SQLite file, a failed
trial, and the one-line errors of a bad --space."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from reliability_helpers import one_error, run_main
from tasks.engine import config
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
