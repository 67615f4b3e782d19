"""One step of each wrapper equals the normative formula computed by hand."""
import pytest
import torch

import optim
from optim_helpers import batch, clone, closure_for, reference_direction, step_with_gradient, tiny_mlp

BASES = {
    "sgd_momentum": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    "adam": (torch.optim.Adam, dict(lr=0.01, weight_decay=1e-3)),
}


def run_both(method, base_name, rho_min_end=None, adaptive=False, steps=3):
    base_cls, kwargs = BASES[base_name]
    model = tiny_mlp()
    ref_model = clone(model)
    rho, rho_min = (0.5 if adaptive else 0.05), 0.04
    if method == "bsam":
        opt = optim.BSAM(model.parameters(), base_cls, rho=rho, rho_min=rho_min,
                         rho_min_end=rho_min_end, lr_end_ratio=0.0, adaptive=adaptive, **kwargs)
    else:
        opt = optim.SAM(model.parameters(), base_cls, rho=rho, adaptive=adaptive, **kwargs)
    ref_opt = base_cls(ref_model.parameters(), **kwargs)
    # the LR halves every step: an lr-proportional rho_min must follow it
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=1, gamma=0.5)
    lr0 = kwargs["lr"]
    for t in range(steps):
        x, y = batch(seed=t)
        lr = ref_opt.param_groups[0]["lr"]
        expected_rho_min = rho_min if rho_min_end is None else rho_min_end + (rho_min - rho_min_end) * lr / lr0
        weights = {k: v.detach().clone() for k, v in ref_model.named_parameters()}
        d = reference_direction(ref_model, weights, x, y, method, rho, expected_rho_min, adaptive)
        step_with_gradient(ref_model, ref_opt, d)
        opt.step(closure_for(model, opt, x, y))
        if method == "bsam":
            assert opt.last_stats["rho_min"] == pytest.approx(expected_rho_min, rel=1e-12)
        sched.step()
        ref_sched.step()
    return model, ref_model


def assert_same_weights(a, b, tol=1e-6):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=tol, rtol=0, msg=f"{name} differs")


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("rho_min_end", [None, 0.0], ids=["const_rho_min", "lr_prop_rho_min"])
def test_bsam_step_equals_formula(base, rho_min_end):
    model, ref = run_both("bsam", base, rho_min_end=rho_min_end)
    assert_same_weights(model, ref)


@pytest.mark.parametrize("base", list(BASES))
def test_bsam_adaptive_step_equals_formula(base):
    model, ref = run_both("bsam", base, rho_min_end=0.0, adaptive=True)
    assert_same_weights(model, ref)


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_and_asam_step_equals_formula(base, adaptive):
    model, ref = run_both("sam", base, adaptive=adaptive)
    assert_same_weights(model, ref)


def test_bsam_differs_from_sam_and_sgd():
    """The test above could pass for a wrapper that ignores its passes only if the rule
    were degenerate: check the three methods really move differently."""
    bsam, _ = run_both("bsam", "sgd_momentum", steps=1)
    sam, _ = run_both("sam", "sgd_momentum", steps=1)
    plain = tiny_mlp()
    opt = torch.optim.SGD(plain.parameters(), **BASES["sgd_momentum"][1])
    x, y = batch(seed=0)
    opt.step(closure_for(plain, opt, x, y))
    first = lambda m: next(m.parameters())
    assert not torch.allclose(first(bsam), first(sam), atol=1e-9)
    assert not torch.allclose(first(sam), first(plain), atol=1e-9)


def test_rho_min_schedule_formula():
    group = dict(rho_min=0.05, rho_min_end=0.01, lr_start=0.1, lr_end=0.0, lr=0.025)
    assert optim.current_rho_min(group) == pytest.approx(0.01 + 0.04 * 0.25)
    group.update(rho_min_end=None)
    assert optim.current_rho_min(group) == 0.05


def test_per_group_rho():
    """A group with rho = rho_min = 0 (e.g. quantizer step sizes) is never perturbed:
    its gradient is then g0 + g0 - r * g0 computed at the others' perturbed points."""
    model = tiny_mlp()
    first, last = model[0], model[2]
    opt = optim.BSAM([{"params": first.parameters()},
                      {"params": last.parameters(), "rho": 0.0, "rho_min": 0.0}],
                     torch.optim.SGD, rho=0.05, rho_min=0.05, lr=0.0)
    x, y = batch()
    before = last.weight.detach().clone()
    seen, seen_first = [], []

    def closure():
        opt.zero_grad()
        seen.append(last.weight.detach().clone())
        seen_first.append(first.weight.detach().clone())
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert len(seen) == 3
    for w in seen:
        torch.testing.assert_close(w, before, atol=0, rtol=0)
    assert not torch.equal(seen_first[0], seen_first[1])  # the other group did move
