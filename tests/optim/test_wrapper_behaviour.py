"""BN statistics, skipped parameters, non-finite gradients, state round trip, AMP."""
import copy
import warnings

import pytest
import torch
from torch import nn

import optim
from optim_helpers import batch, closure_for, loss_fn, tiny_mlp


def make(method, model, **kw):
    return optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, method=method,
                       model=model, **kw)


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_bn_running_stats_change_on_first_pass_only(method):
    model = tiny_mlp(bn=True)
    bn = model[1]
    opt = make(method, model)
    x, y = batch()
    stats_per_pass = []

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        stats_per_pass.append((bn.running_mean.clone(), int(bn.num_batches_tracked)))
        loss.backward()
        return loss

    reference = copy.deepcopy(model)
    reference(x)  # one plain training forward: what the first pass must do to the stats
    opt.step(closure)
    assert len(stats_per_pass) == opt.passes
    after_first = stats_per_pass[0]
    for mean, tracked in stats_per_pass[1:]:
        torch.testing.assert_close(mean, after_first[0], atol=0, rtol=0)
        assert tracked == 1
    torch.testing.assert_close(bn.running_mean, reference[1].running_mean, atol=0, rtol=0)
    assert bn.track_running_stats  # restored after the step


def test_frozen_bn_helper_restores_flag_on_error():
    model = tiny_mlp(bn=True)
    with pytest.raises(RuntimeError):
        with optim.frozen_bn_stats(model):
            assert not model[1].track_running_stats
            raise RuntimeError("boom")
    assert model[1].track_running_stats


@pytest.mark.parametrize("method", ["sam", "asam", "bsam"])
def test_params_without_grad_are_untouched(method):
    model = tiny_mlp()
    unused = nn.Parameter(torch.ones(4, dtype=torch.double))
    params = list(model.parameters()) + [unused]
    opt = optim.build(params, "sgd", lr=0.1, weight_decay=0.1, method=method)
    x, y = batch()
    for _ in range(2):
        opt.step(closure_for(model, opt, x, y))
    assert torch.equal(unused, torch.ones(4, dtype=torch.double))
    assert unused.grad is None
    assert unused not in opt.base_optimizer.state


@pytest.mark.parametrize("method,bad_pass", [("sam", 0), ("sam", 1), ("bsam", 0), ("bsam", 1), ("bsam", 2)])
def test_non_finite_gradient_skips_step(method, bad_pass):
    model = tiny_mlp()
    opt = make(method, model)
    x, y = batch()
    opt.step(closure_for(model, opt, x, y))  # build momentum state
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.base_optimizer.state_dict())
    calls = []

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        if len(calls) == bad_pass:
            loss = loss * float("inf")
        calls.append(1)
        loss.backward()
        return loss

    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(closure)
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = opt.base_optimizer.state_dict()
    for i, s in state["state"].items():
        assert torch.equal(after["state"][i]["momentum_buffer"], s["momentum_buffer"])
    with warnings.catch_warnings():  # and the next good step works normally
        warnings.simplefilter("error")
        opt.step(closure_for(model, opt, x, y))


@pytest.mark.parametrize("method", ["none", "sam", "bsam"])
def test_state_dict_round_trip_continues_identically(method):
    def fresh():
        model = tiny_mlp()
        opt = optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, method=method,
                          rho_min_end=0.0, lr_end_ratio=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        return model, opt, sched

    model, opt, sched = fresh()
    for t in range(3):
        x, y = batch(seed=t)
        opt.step(closure_for(model, opt, x, y))
        sched.step()
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    for t in range(3, 6):
        x, y = batch(seed=t)
        opt.step(closure_for(model, opt, x, y))
        sched.step()

    model2, opt2, sched2 = fresh()
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    for t in range(3, 6):
        x, y = batch(seed=t)
        opt2.step(closure_for(model2, opt2, x, y))
        sched2.step()
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    if method == "bsam":
        assert opt2.last_stats["rho_min"] == opt.last_stats["rho_min"]


def test_reference_compat_moves_weights_by_rho_min_at_lr_zero():
    x, y = batch()
    moved = {}
    for compat in (False, True):
        model = tiny_mlp()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = optim.BSAM(model.parameters(), torch.optim.SGD, rho=0.05, rho_min=0.03,
                         reference_compat=compat, lr=0.0)
        opt.step(closure_for(model, opt, x, y))
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moved[compat] = (after - before).norm().item()
    assert moved[False] == 0.0  # paper rule: w restored exactly
    assert moved[True] == pytest.approx(0.03, rel=1e-6)  # authors' code: w - e_min


def test_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.build(model.parameters(), "sgd", lr=0.1, method="bsam", model=model)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))

    def closure():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(20)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < losses[0]
    assert set(opt.last_stats) >= {"grad_norm", "perturbed_grad_norm", "min_grad_norm",
                                   "cos_g0_g2", "rho_min"}


def manual_bsam_step(model, opt, x, y, scaler=None):
    """The pass-by-pass API, as an AMP / manual-optimization loop would use it."""
    scale = (lambda loss: scaler.scale(loss)) if scaler else (lambda loss: loss)
    opt.zero_grad()
    scale(loss_fn(model, x, y)).backward()
    opt.ascend()
    with optim.frozen_bn_stats(model):
        opt.zero_grad()
        scale(loss_fn(model, x, y)).backward()
        opt.descend_to_min()
        opt.zero_grad()
        scale(loss_fn(model, x, y)).backward()
    if scaler is None:
        return opt.update()
    opt.prepare_update()
    scaler.step(opt)
    scaler.update()


def test_grad_scaler_gives_the_unscaled_update_and_skips_overflow():
    x, y = batch()
    plain, scaled = tiny_mlp().float(), tiny_mlp().float()
    x = x.float()
    opt_a = optim.build(plain.parameters(), "sgd", lr=0.1, method="bsam")
    opt_b = optim.build(scaled.parameters(), "sgd", lr=0.1, method="bsam")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for _ in range(2):
        manual_bsam_step(plain, opt_a, x, y)
        manual_bsam_step(scaled, opt_b, x, y, scaler)
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # an overflowing scale: the scaler must see the inf and skip the step
    weights = [p.detach().clone() for p in scaled.parameters()]
    scaler.update(new_scale=3.0e38)
    manual_bsam_step(scaled, opt_b, x, y * 0 + 1, scaler)
    for w, p in zip(weights, scaled.parameters()):
        assert torch.equal(w, p)
    assert scaler.get_scale() < 3.0e38


def test_step_without_closure_explains_itself():
    model = tiny_mlp()
    opt = optim.build(model.parameters(), "sgd", lr=0.1, method="bsam")
    with pytest.raises(RuntimeError, match="needs a closure"):
        opt.step()


def test_lr_scheduler_on_wrapper_and_base_see_same_groups():
    model = tiny_mlp()
    opt = optim.build(model.parameters(), "adam", lr=0.01, method="sam")
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer, step_size=1, gamma=0.1)
    x, y = batch()
    opt.step(closure_for(model, opt, x, y))
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    assert opt.param_groups is opt.base_optimizer.param_groups


def test_build_rejects_unknown_names_with_suggestion():
    model = tiny_mlp()
    with pytest.raises(ValueError, match="did you mean 'bsam'"):
        optim.build(model.parameters(), "sgd", lr=0.1, method="bsma")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        optim.build(model.parameters(), "rmsprop", lr=0.1)


@pytest.mark.parametrize("base", ["sgd", "adam", "adamw"])
def test_base_update_is_torchs_own_loop_bit_for_bit_and_fused_within_an_ulp(base):
    """The suite's default multi-tensor update equals torch's per-parameter loop exactly, so
    turning it on changed no result; the fused kernel (TRAIN.FUSED_OPTIMIZER) only rounds."""
    def train(build):
        model = tiny_mlp().float()
        opt = build(model)
        for t in range(4):
            x, y = batch(seed=t)
            opt.step(closure_for(model, opt, x.float(), y))
        return torch.cat([p.detach().flatten() for p in model.parameters()]), opt

    kwargs = dict(lr=0.05, weight_decay=0.01, method="bsam")
    loop, _ = train(lambda m: optim.BSAM(m.parameters(), optim.factory.BASE_OPTIMIZERS[base],
                                         lr=0.05, weight_decay=0.01, foreach=False,
                                         **({"momentum": 0.9} if base == "sgd" else {})))
    ours, opt = train(lambda m: optim.build(m.parameters(), base, **kwargs))
    fused, fused_opt = train(lambda m: optim.build(m.parameters(), base, fused=True, **kwargs))
    assert opt.base_optimizer.defaults["foreach"] and not opt.base_optimizer.defaults.get("fused")
    assert fused_opt.base_optimizer.defaults["fused"]
    assert torch.equal(ours, loop)
    torch.testing.assert_close(fused, loop, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_prepare_update_then_update_is_one_step_with_the_same_stats(method):
    """The documented by-hand sequence may call prepare_update() before update(): the
    direction is built once, so weights and diagnostics equal update() alone."""
    x, y = batch()
    results = []
    for prepare_first in (False, True):
        model = tiny_mlp()
        opt = make(method, model)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        assert opt.ascend()
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        if method == "bsam":
            assert opt.descend_to_min()
            opt.zero_grad()
            loss_fn(model, x, y).backward()
        if prepare_first:
            assert opt.prepare_update()
            with pytest.raises(RuntimeError, match="called twice"):
                opt.prepare_update()
        assert opt.update()
        results.append((torch.cat([p.detach().flatten() for p in model.parameters()]), opt.last_stats))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]
    if method == "bsam":
        assert results[1][1]["cos_g0_g2"] > 0.99  # g0 and g2 of one batch, rho 0.05 apart


def test_pass_methods_out_of_order_are_errors():
    model = tiny_mlp()
    opt = make("bsam", model)
    x, y = batch()
    with pytest.raises(RuntimeError, match="wrong point"):
        opt.prepare_update()
    loss_fn(model, x, y).backward()
    opt.ascend()
    with pytest.raises(RuntimeError, match="in the middle of a step"):
        opt.ascend()


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_stats_are_in_true_units_with_a_grad_scaler(method):
    x, y = batch()
    x = x.float()
    stats = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 14)):
        model = tiny_mlp().float()
        opt = make(method, model)

        def run_pass(_):
            opt.zero_grad()
            loss = loss_fn(model, x, y)
            (scaler.scale(loss) if scaler else loss).backward()
            return loss

        optim.run_step(opt, run_pass, scaler)
        stats.append(opt.last_stats)
    plain, scaled = stats
    assert set(plain) == set(scaled) >= {"grad_norm", "perturbed_grad_norm", "full_step"}
    for key, value in plain.items():
        assert scaled[key] == pytest.approx(value, rel=1e-4), key
