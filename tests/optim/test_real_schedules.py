"""The wrappers under the schedules a run really uses: rho_min follows each param group's own
LR under every LR schedule, clipping acts on what the base optimizer receives, batch-norm
layers are found without ``model=``, and rho ramps up from 0."""
import copy
from types import SimpleNamespace

import pytest
import torch

import optim
from optim_helpers import (batch, clone, closure_for, loss_fn, norm, reference_direction,
                           step_with_gradient, tiny_mlp)
from tasks.engine.config import make_config
from tasks.engine.optimization import build_optimizer
from tasks.engine.schedule import make_lr_factor, rho_warmup_factor

RHO_MIN, RHO_MIN_END = 0.05, 0.01


def schedule_cfg(kind, warmup_epochs):
    return SimpleNamespace(END_EPOCH=6, BEGIN_EPOCH=0, LR=0.1, LR_END=0.001, LR_SCHEDULER=kind,
                           WARMUP_EPOCHS=warmup_epochs, LR_STEP=[2, 4], LR_FACTOR=0.1)


def rho_min_over_schedule(kind, warmup_epochs, iters_per_epoch=5):
    """rho_min of a 0.1-LR group and a 0.01-LR group (a backbone multiplier) at every
    iteration of a run, with the lr of each."""
    model = tiny_mlp()
    factor, end_ratio = make_lr_factor(schedule_cfg(kind, warmup_epochs), iters_per_epoch)
    opt = optim.BSAM([{"params": model[0].parameters()},
                      {"params": model[2].parameters(), "lr": 0.01}], torch.optim.SGD,
                     rho_min=RHO_MIN, rho_min_end=RHO_MIN_END, lr_end_ratio=end_ratio, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rows = []
    for _ in range(6 * iters_per_epoch):
        rows.append([(g["lr"], optim.current_rho_min(g)) for g in opt.param_groups])
        opt.step(closure_for(model, opt, *batch()))
        sched.step()
    return rows, factor


@pytest.mark.parametrize("warmup", [0, 1], ids=["no_warmup", "warmup"])
@pytest.mark.parametrize("kind", ["cosine", "multistep", "constant"])
def test_rho_min_follows_each_groups_own_lr_within_its_bounds(kind, warmup):
    rows, factor = rho_min_over_schedule(kind, warmup)
    end_factor = factor(len(rows))
    for (lr_a, rho_a), (lr_b, rho_b) in rows:
        # both groups are at the same point of their own schedule: same rho_min
        assert rho_a == pytest.approx(rho_b, rel=1e-9, abs=1e-15)
        assert RHO_MIN_END <= rho_a <= RHO_MIN
        f = lr_a / 0.1
        if kind == "constant":
            expected = RHO_MIN * f  # proportional to the LR (a warm-up ramps it)
        else:
            expected = RHO_MIN_END + (RHO_MIN - RHO_MIN_END) * (f - end_factor) / (1 - end_factor)
        assert rho_a == pytest.approx(min(max(expected, RHO_MIN_END), RHO_MIN), rel=1e-9)
    after_warmup = rows[5 * warmup]
    assert after_warmup[0][1] == pytest.approx(RHO_MIN)  # the start anchor excludes the warm-up
    if kind != "constant":
        assert rows[-1][0][1] == pytest.approx(RHO_MIN_END, abs=0.005)


def test_a_multistep_warmup_run_never_gives_a_negative_rho_min():
    """The case of the issue: multistep + warm-up, two groups: before, the warm-up pushed
    rho_min below 0 and the 0.1x group ended at -0.005 (w - e_min became w + |e_min|)."""
    model = tiny_mlp()
    factor, end_ratio = make_lr_factor(schedule_cfg("multistep", 1), 5)
    opt = optim.BSAM([{"params": model[0].parameters()},
                      {"params": model[2].parameters(), "lr": 0.001}], torch.optim.SGD,
                     rho_min=0.05, rho_min_end=0.0, lr_end_ratio=end_ratio, lr=0.01)
    for it in range(31):
        for group in opt.param_groups:
            group["lr"] = group["lr_start"] * factor(it)
        assert all(optim.current_rho_min(g) >= 0 for g in opt.param_groups)
    assert [optim.current_rho_min(g) for g in opt.param_groups] == [0.0, 0.0]


def clipped(direction: dict, max_norm: float) -> dict:
    scale = min(1.0, max_norm / (float(norm(direction)) + 1e-6))
    return {k: v * scale for k, v in direction.items()}


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_clipping_acts_on_the_final_gradient_with_the_rule_on_unclipped_ones(method):
    model, ref = tiny_mlp(), tiny_mlp()
    x, y = batch()
    weights = {k: v.detach().clone() for k, v in ref.named_parameters()}
    d = reference_direction(ref, weights, x, y, method, 0.5, 0.4)
    max_norm = 0.3 * float(norm(d))  # well below every pass's gradient norm too
    opt = optim.build(model.parameters(), "sgd", lr=0.5, momentum=0.0, method=method, rho=0.5,
                      rho_min=0.4, clip_grad_norm=max_norm)
    opt.step(closure_for(model, opt, x, y))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    step_with_gradient(ref, ref_opt, clipped(d, max_norm))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-9, rtol=0)
    final = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert float(final) == pytest.approx(max_norm, rel=1e-4)


def test_clipping_without_a_wrapper_clips_before_the_base_step_and_refuses_a_closure():
    model, ref = tiny_mlp(), tiny_mlp()
    x, y = batch()
    opt = optim.build(model.parameters(), "sgd", lr=0.5, momentum=0.0, clip_grad_norm=0.01)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    g = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    step_with_gradient(ref, torch.optim.SGD(ref.parameters(), lr=0.5), clipped(g, 0.01))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="without a closure"):
        opt.step(closure_for(model, opt, x, y))


def test_the_trainer_config_reaches_the_clipping():
    cfg = make_config({"TRAIN": {"CLIP_GRAD_NORM": 0.01, "OPTIMIZER": "sgd", "MOMENTUM": 0.0},
                       "SAM": {"METHOD": "bsam"}}, task="classification")
    model = tiny_mlp()
    opt, _, _ = build_optimizer(cfg, model.parameters(), model, iters_per_epoch=4)
    opt.step(closure_for(model, opt, *batch()))
    final = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert float(final) == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_without_model_the_batch_norm_layers_that_run_are_frozen(method):
    model = tiny_mlp(bn=True)
    reference = copy.deepcopy(model)
    x, y = batch()
    reference(x)  # the one training forward the first pass stands for
    opt = optim.build(model.parameters(), "sgd", lr=0.1, method=method)  # no model=
    opt.step(closure_for(model, opt, x, y))
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean, atol=0, rtol=0)
    assert int(model[1].num_batches_tracked) == 1
    assert model[1].track_running_stats
    model(x)  # and the layer is not left frozen afterwards
    assert int(model[1].num_batches_tracked) == 2


def test_rho_scale_scales_both_radii():
    model, ref = tiny_mlp(), clone(tiny_mlp())
    x, y = batch()
    opt = optim.BSAM(model.parameters(), torch.optim.SGD, rho=0.5, rho_min=0.4, lr=0.5)
    opt.rho_scale = 0.25
    opt.step(closure_for(model, opt, x, y))
    weights = {k: v.detach().clone() for k, v in ref.named_parameters()}
    d = reference_direction(ref, weights, x, y, "bsam", 0.125, 0.1)
    step_with_gradient(ref, torch.optim.SGD(ref.parameters(), lr=0.5), d)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-9, rtol=0)
    assert opt.last_stats["rho_min"] == pytest.approx(0.1)


def test_rho_warmup_ramps_from_zero_over_its_epochs():
    cfg = make_config({"SAM": {"METHOD": "bsam", "RHO_WARMUP_EPOCHS": 2}}, task="classification")
    model = tiny_mlp()
    _, _, rho_scale = build_optimizer(cfg, model.parameters(), model, iters_per_epoch=5)
    assert [rho_scale(it) for it in (0, 5, 10, 11)] == [0.0, 0.5, 1.0, 1.0]
    assert rho_warmup_factor(3, 0) == 1.0
