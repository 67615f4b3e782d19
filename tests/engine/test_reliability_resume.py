"""--resume refuses a changed config unless told, and then records what is in effect;
hand-made or unreadable checkpoints, full disks and bad --out paths are one line."""
import datetime
import errno

import pytest
import torch
import yaml

import tools.eval
import tools.export
import tools.train
from reliability_helpers import finished, one_error, run_folder, run_main, snapshot  # noqa: F401
from tasks.engine import checkpoint, io
from tasks.engine.errors import UserError
from tasks.engine.resume import config_changes



def test_a_changed_config_is_refused_then_accepted_and_recorded(finished, capsys):
    cfg, folder = finished
    before = snapshot(folder)
    changed = ["TRAIN.END_EPOCH", 2, "TRAIN.LR", 0.2, "SAM.METHOD", "sam", "WORKERS", 0]
    one_error(*run_main(tools.train.main, "--cfg", cfg, "--resume", "--opts", *changed, capsys=capsys),
              "another config", "TRAIN.END_EPOCH 1 -> 2", "TRAIN.LR 0.05 -> 0.2", "SAM.METHOD 'bsam' -> 'sam'",
              "--accept-config-change")
    assert snapshot(folder) == before  # refused before anything is written, train.log included

    accepted = ["TRAIN.END_EPOCH", 2, "TRAIN.LR", 0.2]
    assert run_main(tools.train.main, "--cfg", cfg, "--resume", "--accept-config-change", "--opts",
                    *accepted, capsys=capsys)[0] == 0
    recorded = yaml.safe_load((folder / "config.yaml").read_text())
    assert recorded["TRAIN"]["LR"] == 0.2 and recorded["TRAIN"]["END_EPOCH"] == 2
    state = torch.load(folder / "checkpoint_last.pth", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["TRAIN"]["LR"] == 0.2
    group = state["optimizer"]["base_optimizer"]["param_groups"][0] if "base_optimizer" in state["optimizer"] \
        else state["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 0.2  # the new LR is in effect, not the checkpoint's
    assert "config changes accepted: TRAIN.END_EPOCH 1 -> 2; TRAIN.LR 0.05 -> 0.2" in \
        (folder / "train.log").read_text()


def test_only_keys_that_change_the_training_count():
    stored = {"WORKERS": 2, "OUTPUT_DIR": "a", "TRAIN": {"LR": 0.1, "MAX_NONFINITE_STEPS": 5},
              "DEBUG": {"DEBUG": False}, "SAM": {"RHO": 0.05}}
    current = {"WORKERS": 0, "OUTPUT_DIR": "b", "TRAIN": {"LR": 0.1, "MAX_NONFINITE_STEPS": 9, "NEW": 1},
               "DEBUG": {"DEBUG": True}, "SAM": {"RHO": 0.1}}
    assert config_changes(stored, current) == [("SAM.RHO", 0.05, 0.1)]


def test_hand_made_checkpoint_fields_of_the_wrong_type(finished, capsys):
    cfg, folder = finished
    last = folder / "checkpoint_last.pth"
    original = torch.load(last, weights_only=True)
    cases = [("epoch", "7"), ("epoch", -1), ("history", {"a": 1}), ("optimizer", [1, 2]),
             ("model", {"w": [1.0]})]
    for field, value in cases:
        torch.save({**original, field: value}, last)
        data = last.read_bytes()
        one_error(*run_main(tools.train.main, "--cfg", cfg, "--resume", capsys=capsys),
                  "checkpoint_last.pth", repr(field))
        assert last.read_bytes() == data


def test_load_names_the_real_reason(tmp_path):
    refused = tmp_path / "refused.pth"
    torch.save({"model": {}, "note": datetime.date(2026, 1, 1)}, refused)
    with pytest.raises(UserError) as err:
        checkpoint.load(refused)
    assert "safe loading refuses (datetime.date)" in str(err.value)
    assert "corrupt" not in str(err.value) and "truncated" not in str(err.value)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(refused.read_bytes()[:100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        checkpoint.load(truncated)


@pytest.mark.parametrize("failure", [RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint_last.pth"
    checkpoint.save(path, model={"w": torch.ones(2)}, epoch=1)
    data = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half")
        raise failure

    monkeypatch.setattr(io.torch, "save", full)
    with pytest.raises(UserError) as err:
        checkpoint.save(path, model={"w": torch.zeros(2)}, epoch=2)
    assert str(path) in str(err.value) and "left as it was" in str(err.value)
    assert path.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_out_paths_of_the_wrong_kind(finished, tmp_path, capsys):
    cfg, folder = finished
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_error(*run_main(tools.eval.main, "--cfg", cfg, "--checkpoint", folder / "model_best.pth",
                        "--out", a_file, capsys=capsys), "--out", "not a folder")
    one_error(*run_main(tools.export.main, "--cfg", cfg, "--checkpoint", folder / "model_best.pth",
                        "--out", tmp_path, capsys=capsys), "--out", "is a folder")
    assert a_file.read_text() == "x"
