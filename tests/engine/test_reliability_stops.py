"""Nothing of a run is lost or rewritten: a finished run's --resume, a second signal (also
during a checkpoint write), evaluation into a run folder, hand-edited checkpoint fields,
and a last batch of one sample that batch norm cannot train on."""
import os
import signal

import torch

import tools.eval
import tools.train
from reliability_helpers import finished, one_error, run_folder, run_main, snapshot  # noqa: F401
from tasks.engine import cli, io
from tasks.engine.trainer import Trainer



def kept(folder):
    """The run's files but its log and lock (a refused or no-op call may log a line)."""
    files = snapshot(folder)
    return {k: v for k, v in files.items() if k not in ("train.log", ".lock")}


def test_resuming_a_finished_run_rewrites_nothing(finished, capsys):
    cfg, folder = finished
    before = kept(folder)
    code, err = run_main(tools.train.main, "--cfg", cfg, "--resume", capsys=capsys)
    assert code == 0 and "Traceback" not in err
    after = kept(folder)
    assert {name: after.get(name) for name in before} == before  # (tensorboard adds an events file)
    assert "its results.json is kept as it was" in (folder / "train.log").read_text()


def test_eval_into_a_training_run_folder_is_refused(finished, capsys):
    cfg, folder = finished
    before = snapshot(folder)
    one_error(*run_main(tools.eval.main, "--cfg", cfg, "--checkpoint", folder / "model_best.pth",
                        "--out", folder, capsys=capsys), "--out", "training run's folder", "results.json")
    assert snapshot(folder) == before


def signal_at(step: int, times: int, monkeypatch):
    """SIGTERM ``times`` times during training step ``step`` (1-based)."""
    train_step = Trainer._train_step

    def step_then_signal(self, batch):
        out = train_step(self, batch)
        if self.global_step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "_train_step", step_then_signal)


def test_a_second_signal_stops_at_once_with_one_line(tiny_cls_cfg, monkeypatch, capsys):
    cfg = tiny_cls_cfg("twice", TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 4})
    signal_at(2, 2, monkeypatch)
    code, err = run_main(tools.train.main, "--cfg", cfg, capsys=capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == cli.INTERRUPTED and "Traceback" not in err, err
    assert lines == [err.strip().splitlines()[-1]] and "second SIGTERM" in lines[0] and "--resume" in lines[0]
    folder = run_folder(cfg)
    assert not (folder / "checkpoint_last.pth").exists()
    # nothing of a run is kept, so both ways agree: --resume says start fresh, and fresh works
    monkeypatch.undo()
    one_error(*run_main(tools.train.main, "--cfg", cfg, "--resume", capsys=capsys),
              "checkpoint not found", "run without --resume")
    assert run_main(tools.train.main, "--cfg", cfg, capsys=capsys)[0] == 0


def test_a_second_signal_during_a_checkpoint_write_waits_for_it(tiny_cls_cfg, monkeypatch, capsys):
    cfg = tiny_cls_cfg("during", TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 4})
    signal_at(2, 1, monkeypatch)
    real_save = io.torch.save

    def save_with_a_signal(obj, f, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the checkpoint is written
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(io.torch, "save", save_with_a_signal)
    code, err = run_main(tools.train.main, "--cfg", cfg, capsys=capsys)
    assert code == cli.INTERRUPTED and "Traceback" not in err, err
    folder = run_folder(cfg)
    state = torch.load(folder / "checkpoint_last.pth", weights_only=True)  # complete
    assert state["iters_done"] == 2 and not list(folder.glob(".*.tmp"))
    monkeypatch.undo()
    assert run_main(tools.train.main, "--cfg", cfg, "--resume", capsys=capsys)[0] == 0


def test_a_run_without_a_checkpoint_gets_one_advice_both_ways(finished, capsys):
    cfg, folder = finished
    (folder / "checkpoint_last.pth").unlink()  # as if stopped between model_best and it
    resume = one_error(*run_main(tools.train.main, "--cfg", cfg, "--resume", capsys=capsys), "--overwrite")
    fresh = one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys), "--overwrite")
    assert "--resume" not in fresh.replace("without --resume", "") and "without --resume" not in resume


def ranks_of(state, **fields):
    return {**state, **{k: [v] for k, v in fields.items()}}


def test_every_checkpoint_field_is_checked_before_use(finished, capsys):
    cfg, folder = finished
    last = folder / "checkpoint_last.pth"
    original = torch.load(last, weights_only=True)
    rng, partial = original["rng"][0], original["partial"][0]
    slots = original["optimizer"]["state"]
    edited_optimizer = {**original["optimizer"], "state": {**slots, 0: {"momentum_buffer": torch.zeros(3, 1)}}}
    bad_cycle = {**original["optimizer"], "sharpness_aware_cycle": {"steps_begun": 1, "v_norm": 0.0,
                                                                     "v": {10 ** 6: torch.zeros(1)}}}
    cases = [({"rng": [{"torch": "x"}]}, "'rng'"), ({"rng": rng}, "'rng'"),
             (ranks_of(original, rng={**rng, "torch": torch.zeros(3, dtype=torch.uint8)}), "'rng'"),
             ({"rng": [], "partial": []}, "'rng'"), ({"best": {"val_top1": "high"}}, "'best'"),
             ({"best": {"epoch": 0, "val_loss": 1.0}}, "'best'"), ({"history": [1, 2]}, "'history'"),
             ({"history": [{"epoch": "0"}]}, "'history'"), ({"partial": [{"loss": "a"}]}, "'partial'"),
             ({"partial": [{**partial, "_diagnostics": 1}]}, "'partial'"), ({"config": "x"}, "'config'"),
             ({"iters_done": 10 ** 6}, "'iters_done'"), ({"optimizer": edited_optimizer}, "optimizer state"), ({"optimizer": bad_cycle}, "does not fit")]
    for fields, named in cases:
        state = fields if "model" in fields else {**original, **fields}
        torch.save(state, last)
        data = last.read_bytes()
        one_error(*run_main(tools.train.main, "--cfg", cfg, "--resume", capsys=capsys),
                  "checkpoint_last.pth", named)
        assert last.read_bytes() == data


def test_a_last_batch_of_one_sample_before_a_1x1_batch_norm(tiny_cls_cfg, capsys):
    # 8x8 pictures: ResNet-18's last stages normalise 1x1 maps
    small = dict(DATASET={"IMAGE_SIZE": 8}, MODEL={"NAME": "resnet18", "NUM_CLASSES": 2})
    cfg = tiny_cls_cfg("one_left", **small, TRAIN={"END_EPOCH": 1, "BATCH_SIZE_PER_GPU": 47})
    code, err = run_main(tools.train.main, "--cfg", cfg, capsys=capsys)
    assert code == 0, err
    log = (run_folder(cfg) / "train.log").read_text()
    assert "the last batch of each epoch would hold 1 sample" in log and "1 it/epoch" in log
    single = tiny_cls_cfg("single", **small, TRAIN={"END_EPOCH": 1, "BATCH_SIZE_PER_GPU": 1})
    one_error(*run_main(tools.train.main, "--cfg", single, capsys=capsys),
              "TRAIN.BATCH_SIZE_PER_GPU 1", "batch size >= 2")
