"""tools/eval.py and tools/train.py --resume on a run's own stored config: no --cfg, no
repeated --opts; eval writes beside the checkpoint and lists its files; a checkpoint that
does not fit names the config keys that differ; a training run's results are never replaced."""
from __future__ import annotations

import json
import shutil
import sys
from unittest import mock

import pytest
import torch

import tools.eval
import tools.train
from tasks.engine import cli
from tasks.engine.weights import mismatch_summary


def run(tool_main, *args, capsys) -> tuple[int, str, str]:
    with mock.patch.object(sys, "argv", ["tool", *map(str, args)]):
        with pytest.raises(SystemExit) as exited:
            cli.run(tool_main)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.fixture(scope="module")
def trained(tiny_image_folder, tmp_path_factory):
    """A one-epoch run started with --opts that its config file does not hold (a model of
    another depth, another NAME)."""
    from conftest import _tiny_cls_yaml

    tmp = tmp_path_factory.mktemp("stored")
    cfg = tmp / "base.yaml"
    cfg.write_text(_tiny_cls_yaml(tiny_image_folder, tmp / "out", MODEL={"NAME": "cifar_resnet56"},
                                  TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 2}))
    with mock.patch.object(sys, "argv", ["train.py", "--cfg", str(cfg), "--opts", "NAME", "custom",
                                         "MODEL.NAME", "cifar_resnet20"]):
        with pytest.raises(SystemExit) as exited:
            cli.run(tools.train.main)
    assert exited.value.code == 0
    return cfg, tmp / "out" / "classification" / "custom"


def test_eval_needs_only_the_checkpoint_and_writes_beside_it(trained, capsys):
    cfg, run_dir = trained
    code, out, err = run(tools.eval.main, "--checkpoint", run_dir / "model_best.pth", capsys=capsys)
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    best = json.loads((run_dir / "results.json").read_text())["best"]
    assert metrics["top1"] == best["val_top1"]
    written = {line.removeprefix("wrote ") for line in err.splitlines() if line.startswith("wrote ")}
    on_disk = {str(p) for p in (run_dir / "eval").rglob("*") if p.is_file()}
    assert written == on_disk and str(run_dir / "eval" / "results.json") in written
    assert "confusion_matrix.png" in " ".join(written)


def test_a_checkpoint_that_does_not_fit_names_the_differing_keys(trained, capsys):
    cfg, run_dir = trained  # trained as cifar_resnet20; the file says cifar_resnet56
    code, _, err = run(tools.eval.main, "--cfg", cfg, "--checkpoint", run_dir / "model_best.pth", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "MODEL.NAME 'cifar_resnet20' where this config has 'cifar_resnet56'" in err
    assert "leave out --cfg" in err


def test_eval_never_replaces_a_training_runs_results(trained, capsys):
    _, run_dir = trained
    before = (run_dir / "results.json").read_bytes()
    code, _, err = run(tools.eval.main, "--checkpoint", run_dir / "model_best.pth", "--out", run_dir,
                       capsys=capsys)
    assert code == 2 and "is a training run's folder" in err and str(run_dir / "eval") in err
    assert (run_dir / "results.json").read_bytes() == before


def test_resume_a_run_folder_from_its_own_config(trained, capsys, monkeypatch, tmp_path):
    run_dir = tmp_path / "elsewhere" / "classification" / "custom"  # moved: continued where it is now
    shutil.copytree(trained[1], run_dir)
    monkeypatch.chdir(tmp_path.parent)  # another working directory: the folder is found by its path
    code, _, err = run(tools.train.main, "--resume", run_dir, "--accept-config-change",
                       "--opts", "TRAIN.END_EPOCH", "2", capsys=capsys)
    assert code == 0, err
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # the first epoch kept, the second added
    assert "cifar_resnet20" in (run_dir / "config.yaml").read_text()
    assert not (trained[1] / "metrics.csv").read_text().count("\n") > 2  # the original is untouched
    code, _, err = run(tools.train.main, capsys=capsys)
    assert code == 2 and "--resume RUN_DIR" in err


def test_a_plain_state_dict_needs_the_config(tmp_path, capsys):
    path = tmp_path / "weights.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    code, _, err = run(tools.eval.main, "--checkpoint", path, capsys=capsys)
    assert code == 2 and "holds no config (a plain state_dict): give --cfg" in err


def test_the_mismatch_is_told_in_whole_keys():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError) as err:
        model.load_state_dict(other.state_dict())
    text = mismatch_summary(err.value)
    assert text.startswith("unexpected: 3.weight, 3.bias; size mismatch for 0.weight: copying a param")
    assert text.endswith("(and 2 more)")  # 0.bias, 1.weight


def test_training_logs_progress_and_says_where_its_outputs_are(trained):
    _, run_dir = trained
    log = (run_dir / "train.log").read_text()
    assert " epoch 0 it 1/2 loss " in log and "epoch ETA" in log and "run ETA" in log
    assert f"outputs in {run_dir}/" in log and "pictures: confusion_matrix.png, curves.png" in log
