"""Divergence stops the run and is never saved; non-finite weights are never loaded; every
JSON written is valid JSON."""
import json
import math

import pytest
import torch

import tools.eval
import tools.train
from reliability_helpers import one_error, run_folder, run_main, snapshot
from tasks.engine import checkpoint
from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.engine.guard import NonFiniteSteps
from tasks.engine.io import json_text, save_json
from tasks.engine.records import epoch_line


def test_consecutive_nonfinite_steps_stop_at_the_limit():
    guard = NonFiniteSteps(3)
    for loss in (math.nan, 1.0, math.inf, math.nan):  # a finite step resets the count
        guard.observe(loss, {}, "here")
    guard.observe(0.5, {"grad_norm": 1.0}, "here")
    guard.observe(0.5, {"grad_norm": math.nan}, "here")  # a step SAM/BSAM skipped
    guard.observe(math.nan, {}, "here")
    with pytest.raises(UserError, match="diverged: 3 steps in a row.*MAX_NONFINITE_STEPS 3"):
        guard.observe(math.inf, {}, "epoch 4, iteration 7")


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tiny_cls_cfg, capsys):
    cfg = tiny_cls_cfg("diverge", TRAIN={"END_EPOCH": 1, "OPTIMIZER": "sgd"}, SAM={"METHOD": "none"})
    assert run_main(tools.train.main, "--cfg", cfg, capsys=capsys)[0] == 0
    folder = run_folder(cfg)
    before = {k: v for k, v in snapshot(folder).items() if k.endswith((".pth", ".csv", ".json", ".yaml"))}
    code, err = run_main(tools.train.main, "--cfg", cfg, "--resume", "--accept-config-change", "--opts",
                         "TRAIN.END_EPOCH", 3, "TRAIN.LR", 1e6, "TRAIN.MAX_NONFINITE_STEPS", 2, capsys=capsys)
    one_error(code, err, "non-finite")
    after = snapshot(folder)
    for name in ("checkpoint_last.pth", "model_best.pth", "metrics.csv", "results.json"):
        assert after[name] == before[name], name
    for name in ("checkpoint_last.pth", "model_best.pth"):
        weights = torch.load(folder / name, weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert "non-finite" in (folder / "train.log").read_text()  # the log says why it ended


def test_nonfinite_weights_are_never_saved_and_never_loaded(tiny_cls_cfg, tmp_path, capsys):
    good = tmp_path / "good.pth"
    checkpoint.save(good, model={"w": torch.ones(3)}, epoch=0)
    data = good.read_bytes()
    with pytest.raises(UserError, match="3 non-finite.*good.pth was not written"):
        checkpoint.save(good, model={"w": torch.full((3,), math.nan)}, epoch=1)
    assert good.read_bytes() == data

    cfg = tiny_cls_cfg("nan_eval", TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 1})
    from tasks.classification.task import ClassificationTask

    state = ClassificationTask(make_config({"MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": 2}})).build_model().state_dict()
    state["fc.weight"][0, 0] = math.nan
    poisoned = tmp_path / "poisoned.pth"
    torch.save({"model": state}, poisoned)
    one_error(*run_main(tools.eval.main, "--cfg", cfg, "--checkpoint", poisoned, capsys=capsys),
              "poisoned.pth", "1 non-finite")
    one_error(*run_main(tools.train.main, "--cfg", cfg, "--opts", "MODEL.PRETRAINED", poisoned, capsys=capsys),
              "poisoned.pth", "non-finite")


def test_the_epoch_line_shows_nan_and_inf():
    line = epoch_line(3, {"epoch": 3, "lr": 0.1, "train_loss": math.nan, "val_top1": math.inf})
    assert line == "epoch 3: lr=0.1 train_loss=nan val_top1=inf"


def test_json_written_is_valid_json(tmp_path):
    path = save_json({"loss": math.nan, "rows": [math.inf, -math.inf, 1.5], "n": 2}, tmp_path / "r.json")

    def refuse(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": None, "rows": [None, None, 1.5], "n": 2}
    assert json_text({"x": math.nan}) == '{"x": null}'


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_nonfinite_numbers_are_refused_by_validation(value):
    with pytest.raises(UserError, match="TRAIN.LR.*not a finite number"):
        make_config(opts=["TRAIN.LR", value])
