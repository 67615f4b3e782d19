"""TRAIN.EMA_DECAY: the average follows BSAM's base steps only, is evaluated and kept when
better, lives in checkpoints, and a resumed run continues it bit-identically."""
import signal

import torch

from tasks.engine import checkpoint, config
from tasks.engine.ema import better_weights
from tasks.engine.trainer import Trainer

DECAY = 0.8


def make_cfg(path):
    return config.load(path)


def test_ema_is_a_by_hand_ema_of_the_base_steps(tiny_cls_cfg):
    cfg = make_cfg(tiny_cls_cfg("ema", TRAIN={"END_EPOCH": 1, "EMA_DECAY": DECAY, "MAX_ITERS_PER_EPOCH": 4}))
    run = Trainer(cfg)
    base = run.optimizer.base_optimizer
    after_steps = []
    step = base.step

    def recorded_step(*args, **kwargs):  # the weights right after each base step
        out = step(*args, **kwargs)
        after_steps.append({k: v.clone() for k, v in run.model.state_dict().items()})
        return out

    base.step = recorded_step
    seen_by_ema = []
    update = run.ema.update
    run.ema.update = lambda model: (seen_by_ema.append({k: v.clone() for k, v in model.state_dict().items()}),
                                    update(model))
    start = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.fit()
    assert len(after_steps) == len(seen_by_ema) == 4
    by_hand = start
    for weights, seen in zip(after_steps, seen_by_ema):
        assert all(torch.equal(weights[k], seen[k]) for k in weights)  # never a perturbed point
        by_hand = {k: (v.lerp(weights[k], 1 - DECAY) if v.is_floating_point() else weights[k].clone())
                   for k, v in by_hand.items()}
    ema = run.ema.module.state_dict()
    for key, value in by_hand.items():
        assert torch.allclose(ema[key], value, rtol=0, atol=1e-6), key
    assert not torch.equal(ema["fc.weight"], run.model.state_dict()["fc.weight"])
    row = run.history[-1]
    assert "val_top1_ema" in row and "val_top1" in row
    best = torch.load(run.run_dir / checkpoint.BEST, weights_only=True)
    assert best["weights"] in ("raw", "ema") and best["metrics"]["ema_weights"] == (best["weights"] == "ema")
    kept = run.ema.module if best["weights"] == "ema" else run.model
    assert all(torch.equal(best["model"][k], v) for k, v in kept.state_dict().items())
    header = (run.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_top1", "val_top1_ema", "val_loss_ema"} <= set(header)


def test_better_weights_picks_the_better_evaluation():
    row = {"epoch": 0, "val_top1": 50.0, "val_loss": 1.0, "val_top1_ema": 60.0, "val_loss_ema": 0.9}
    assert better_weights(row, "val_top1", True) == ("ema", {"val_top1": 60.0, "val_loss": 0.9})
    assert better_weights(row, "val_top1", False) == ("raw", {"val_top1": 50.0, "val_loss": 1.0})
    assert better_weights({"val_top1": 5.0}, "val_top1", True) == ("raw", {"val_top1": 5.0})
    assert better_weights({**row, "val_top1_ema": float("nan")}, "val_top1", True)[0] == "raw"


def test_resume_with_ema_is_bit_identical(tiny_cls_cfg):
    sections = dict(TRAIN={"END_EPOCH": 2, "EMA_DECAY": DECAY, "BATCH_SIZE_PER_GPU": 6})
    reference = Trainer(make_cfg(tiny_cls_cfg("reference", **sections)))
    reference.fit()
    expected = torch.load(reference.run_dir / checkpoint.LAST, weights_only=True)

    path = tiny_cls_cfg("stopped", **sections)
    run = Trainer(make_cfg(path))
    updates, update = [0], run.ema.update

    def stop_after_eleven(model):  # in epoch 1 (8 iterations an epoch): a signal arrives
        update(model)
        updates[0] += 1
        if updates[0] == 11:
            run._stop_signal = signal.SIGINT

    run.ema.update = stop_after_eleven
    assert run.fit()["stopped"]
    stopped = torch.load(run.run_dir / checkpoint.LAST, weights_only=True)
    assert (stopped["epoch"], stopped["iters_done"]) == (1, 3) and "ema" in stopped
    Trainer(make_cfg(path), resume=True).fit()
    got = torch.load(run.run_dir / checkpoint.LAST, weights_only=True)
    for field in ("model", "ema"):
        assert got[field].keys() == expected[field].keys()
        for key, value in expected[field].items():
            assert torch.equal(got[field][key], value), (field, key)
    assert [r["val_top1_ema"] for r in got["history"]] == [r["val_top1_ema"] for r in expected["history"]]


def test_resuming_a_run_without_ema_starts_the_average_from_its_weights(tiny_cls_cfg):
    path = tiny_cls_cfg("later", TRAIN={"END_EPOCH": 1})
    Trainer(make_cfg(path)).fit()
    cfg = config.load(path, ["TRAIN.EMA_DECAY", "0.9", "TRAIN.END_EPOCH", "2"])
    run = Trainer(cfg, resume=True, accept_config_change=True)
    assert all(torch.equal(a, b) for a, b in zip(run.ema.module.state_dict().values(),
                                                  run.model.state_dict().values()))
    assert run.ema and run.ema.decay == 0.9
