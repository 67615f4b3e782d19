"""TRAIN.ACCUMULATE_STEPS and SAM.PERTURB through the pass driver, in one process: micro-
batches sum to the whole batch's step (no batch norm), local perturbation is each micro-
batch's own rule, and the options combine with the cheaper steps."""
import pytest
import torch

import optim
from accumulation_helpers import METHODS, build, local_direction, micro_step, plain_sgd, step_with
from optim_helpers import batch, clone, tiny_mlp
from tasks.engine import config


LOOK_K2 = dict(interval=2, reuse="look")


@pytest.mark.parametrize("method,cheap", [(m, {}) for m in METHODS]
                         + [("sam", LOOK_K2), ("bsam", LOOK_K2)])
def test_four_micro_batches_of_8_equal_one_batch_of_32(method, cheap):
    whole, accumulated = tiny_mlp(), tiny_mlp()
    opt_whole, opt_acc = build(whole, method, **cheap), build(accumulated, method, **cheap)
    for t in range(10):
        x, y = batch(seed=t, n=32)
        micro_step(whole, opt_whole, x, y, pieces=1)
        micro_step(accumulated, opt_acc, x, y, pieces=4)
    for (name, p), q in zip(whole.named_parameters(), accumulated.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=f"{name} differs")


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_local_perturbation_is_each_micro_batch_with_its_own_gradient(method):
    model = tiny_mlp()
    reference = clone(model)
    opt, ref_opt = build(model, method, perturb="local"), plain_sgd(reference)
    for t in range(5):
        x, y = batch(seed=t, n=32)
        step_with(reference, ref_opt, local_direction(reference, x, y, method, pieces=4))
        micro_step(model, opt, x, y, pieces=4)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=f"{name} differs")
    assert "direction_norm" in opt.last_stats


def test_local_perturbation_of_one_micro_batch_in_one_process_is_global_bit_for_bit():
    a, b = tiny_mlp(), tiny_mlp()
    opt_a, opt_b = build(a, "bsam"), build(b, "bsam", perturb="local")
    for t in range(3):
        x, y = batch(seed=t)
        micro_step(a, opt_a, x, y, pieces=1)
        micro_step(b, opt_b, x, y, pieces=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_non_finite_micro_batch_skips_the_whole_local_step():
    model = tiny_mlp()
    opt = build(model, "bsam", perturb="local")
    x, y = batch(n=16)
    before = [p.detach().clone() for p in model.parameters()]
    xs, ys = x.chunk(2), y.chunk(2)

    def run_pass(i):
        loss = torch.nn.functional.cross_entropy(model(xs[i]), ys[i])
        (loss * (float("inf") if i == 0 else 0.5)).backward()
        return loss

    with pytest.warns(RuntimeWarning, match="non-finite"):
        optim.run_step(opt, run_pass, micro_batches=2)
    assert all(torch.equal(w, p) for w, p in zip(before, model.parameters()))
    assert opt.cycle.steps_begun == 1  # one optimizer step was counted, not two


def test_the_step_count_counts_optimizer_steps_not_micro_batches():
    model = tiny_mlp()
    opt = build(model, "sam", perturb="local", interval=2)
    fulls = []
    for t in range(4):
        x, y = batch(seed=t, n=16)
        micro_step(model, opt, x, y, pieces=4)
        fulls.append(opt.last_stats["full_step"])
    assert opt.cycle.steps_begun == 4 and fulls == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("perturb", ["global", "local"])
def test_micro_batches_under_a_grad_scaler_give_the_unscaled_step_and_stats(perturb):
    plain, scaled = tiny_mlp().float(), tiny_mlp().float()
    opts = [build(m, "bsam", perturb=perturb, interval=2, reuse="look") for m in (plain, scaled)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for t in range(4):
        x, y = batch(seed=t, n=16)
        x = x.float()
        micro_step(plain, opts[0], x, y, pieces=4)
        xs, ys = x.chunk(4), y.chunk(4)

        def run_pass(i):
            loss = torch.nn.functional.cross_entropy(scaled(xs[i]), ys[i])
            scaler.scale(loss * 0.25).backward()
            return loss

        optim.run_step(opts[1], run_pass, scaler, micro_batches=4)
        assert opts[1].last_stats["grad_norm"] == pytest.approx(opts[0].last_stats["grad_norm"], rel=1e-4)
    for p, q in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("opts,expected", [
    (["TRAIN.ACCUMULATE_STEPS", "0"], "TRAIN.ACCUMULATE_STEPS"),
    (["SAM.PERTURB", "locale"], "SAM.PERTURB"),
])
def test_bad_values_are_one_line_errors_naming_the_key(tmp_path, opts, expected):
    path = tmp_path / "exp.yaml"
    path.write_text("TASK: classification\nSAM: {METHOD: bsam}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path, opts)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_bad_perturb_argument_is_refused():
    with pytest.raises(ValueError, match="perturb must be one of global, local"):
        build(tiny_mlp(), "bsam", perturb="replica")


def test_sigterm_between_micro_batches_stops_after_the_step_and_resumes_bit_identically(
        tiny_cls_cfg, monkeypatch):
    """ACCUMULATE_STEPS 2 with SAM.INTERVAL 2 + LookSAM reuse through the trainer: a SIGTERM
    during the first micro-batch of step 1 finishes that optimizer step, and --resume ends
    where an uninterrupted run ends."""
    import os
    import signal

    from tasks.engine.trainer import Trainer

    sections = dict(TRAIN={"END_EPOCH": 2, "ACCUMULATE_STEPS": 2},
                    SAM={"METHOD": "bsam", "RHO_MIN_END": 0.0, "INTERVAL": 2, "REUSE": "look"})
    reference = Trainer(config.load(tiny_cls_cfg("reference", **sections)))
    assert reference.iters_per_epoch == 3  # 6 micro-batches of 8 per epoch
    reference.fit()
    assert reference.optimizer.cycle.steps_begun == 6
    log = (reference.run_dir / "train.log").read_text()
    assert "3 it/epoch" in log and "total batch 1 process(es) x 8 x 2 accumulated = 16" in log

    cfg = config.load(tiny_cls_cfg("stopped", **sections))
    stopped = Trainer(cfg)
    loss = stopped.task.loss
    calls = []

    def loss_then_signal(net, batch):
        calls.append(1)
        if len(calls) == 2 * 3 + 1:  # step 0: 2 micro-batches x 3 passes; then step 1 begins
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(net, batch)

    monkeypatch.setattr(stopped.task, "loss", loss_then_signal)
    assert stopped.fit()["stopped"]
    state = torch.load(stopped.run_dir / "checkpoint_last.pth", weights_only=True)
    assert (state["epoch"], state["iters_done"], state["global_step"]) == (0, 2, 2)
    assert len(calls) == 2 * 3 + 2 * 1  # step 1 (between full steps) ran both micro-batches
    resumed = Trainer(cfg, resume=True)
    resumed.fit()
    for (key, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key
