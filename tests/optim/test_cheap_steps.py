"""Every-k steps and LookSAM's reuse (docs/bsam_rule.md, "Cheaper steps") against the
formulas written out by hand, and their state, pass API, GradScaler path and errors."""
import copy
import io

import pytest
import torch

import optim
from optim_helpers import batch, closure_for, grads_at, loss_fn, norm, tiny_mlp
from tasks.engine import config

EPS = 1e-12
BASES = {"sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
         "adam": (torch.optim.Adam, dict(lr=0.01, weight_decay=1e-3))}
#: two param groups with their own radii: the first layer and the last
RHO = {"0": (0.05, 0.04), "2": (0.1, 0.02)}


def radii(name):
    return RHO[name.split(".")[0]]


def full_direction(model, w, x, y, method):
    """SAM's g1 or BSAM's d at ``w`` with per-group radii, and g0."""
    g0 = grads_at(model, w, x, y)
    unit = {k: g / (norm(g0) + EPS) for k, g in g0.items()}
    g1 = grads_at(model, {k: w[k] + radii(k)[0] * unit[k] for k in w}, x, y)
    if method == "sam":
        return g1, g0
    g2 = grads_at(model, {k: w[k] - radii(k)[1] * unit[k] for k in w}, x, y)
    ratio = norm(g1) / (norm(g2) + EPS)
    return {k: g1[k] + g0[k] - ratio * g2[k] for k in w}, g0


def by_hand(model, base_cls, kwargs, method, interval, reuse, alpha, steps):
    """The cheaper-step rule on dicts of tensors, stepping a plain base optimizer."""
    opt = base_cls(model.parameters(), **kwargs)
    v = None
    for t in range(steps):
        x, y = batch(seed=t)
        w = {k: p.detach().clone() for k, p in model.named_parameters()}
        if t % interval == 0:
            d, g0 = full_direction(model, w, x, y, method)
            dot = sum((d[k] * g0[k]).sum() for k in d)
            v = {k: d[k] - dot / (norm(g0) ** 2 + EPS) * g0[k] for k in d}
        else:
            g0 = grads_at(model, w, x, y)
            d = g0
            if reuse == "look":
                d = {k: g0[k] + alpha * norm(g0) / (norm(v) + EPS) * v[k] for k in g0}
        for k, p in model.named_parameters():
            p.grad = d[k].clone()
        opt.step()
    return model


def groups(model):
    first, last = model[0], model[2]
    return [{"params": first.parameters(), "rho": RHO["0"][0], "rho_min": RHO["0"][1]},
            {"params": last.parameters(), "rho": RHO["2"][0], "rho_min": RHO["2"][1]}]


def make(model, method, base="sgd", **kw):
    base_cls, kwargs = BASES[base]
    cls = optim.BSAM if method == "bsam" else optim.SAM
    return cls(groups(model), base_cls, **kwargs, **kw)


def train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        x, y = batch(seed=t)
        opt.step(closure_for(model, opt, x, y))


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("method", ["sam", "bsam"])
@pytest.mark.parametrize("reuse", ["none", "look"], ids=["every_k", "look"])
def test_cheap_steps_equal_the_formula_after_20_steps(method, base, reuse):
    model = tiny_mlp()
    reference = by_hand(copy.deepcopy(model), *BASES[base], method, 3, reuse, 0.7, steps=20)
    opt = make(model, method, base, interval=3, reuse=reuse, reuse_alpha=0.7)
    full = []
    for t in range(20):
        train(model, opt, 1, start=t)
        full.append(opt.last_stats["full_step"])
        assert ("reuse_factor" in opt.last_stats) == (reuse == "look" and t % 3 != 0)
        assert ("held_share" in opt.last_stats) == (reuse == "look" and t % 3 == 0)
        if "held_share" in opt.last_stats:
            held = opt.cycle.v_norm / opt.last_stats["grad_norm"]
            assert opt.last_stats["held_share"] == pytest.approx(held, rel=1e-6)
    assert full == [float(t % 3 == 0) for t in range(20)]
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=f"{name} differs")
    assert opt.mean_passes == pytest.approx(1 + (opt.passes - 1) / 3)


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_interval_1_is_todays_step_bit_for_bit_with_or_without_look(method):
    today, explicit, look = tiny_mlp(), tiny_mlp(), tiny_mlp()
    for model, kw in ((today, {}), (explicit, dict(interval=1, reuse="none")),
                      (look, dict(interval=1, reuse="look"))):
        train(model, make(model, method, **kw), 5)
    assert same_weights(today, explicit) and same_weights(today, look)


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_resume_between_two_full_steps_is_bit_identical(method):
    """4 steps of a k=3 cycle (the next step reuses v), saved through torch.save and
    loaded with weights_only as a checkpoint is, then 5 more."""
    model = tiny_mlp()
    opt = make(model, method, "adam", interval=3, reuse="look")
    train(model, opt, 4)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(model, opt, 5, start=4)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = tiny_mlp(seed=3)
    resumed.load_state_dict(saved["model"])
    opt2 = make(resumed, method, "adam", interval=3, reuse="look")
    opt2.load_state_dict(saved["opt"])
    assert opt2.cycle.steps_begun == 4 and opt2.cycle.v
    train(resumed, opt2, 5, start=4)
    assert same_weights(model, resumed)


def test_a_checkpoint_without_a_cycle_loads_as_a_fresh_cycle():
    model = tiny_mlp()
    opt = make(model, "bsam", interval=2, reuse="look")
    train(model, opt, 3)
    older = opt.base_optimizer.state_dict()  # what a checkpoint of an earlier version holds
    opt2 = make(tiny_mlp(), "bsam", interval=2, reuse="look")
    opt2.load_state_dict(older)
    assert opt2.cycle.steps_begun == 0 and not opt2.cycle.v


def run_by_hand(model, opt, x, y, scaler=None):
    """The pass API as a hand-written loop uses it."""
    scale = scaler.scale if scaler else (lambda loss: loss)
    opt.zero_grad()
    scale(loss_fn(model, x, y)).backward()
    if opt.ascend():
        with optim.frozen_bn_stats(model):
            opt.zero_grad()
            scale(loss_fn(model, x, y)).backward()
            if isinstance(opt, optim.BSAM) and opt.descend_to_min():
                opt.zero_grad()
                scale(loss_fn(model, x, y)).backward()
    if scaler is None:
        return opt.update()
    opt.prepare_update(grad_scale=scaler.get_scale())
    scaler.step(opt)
    scaler.update()


@pytest.mark.parametrize("method", ["sam", "bsam"])
def test_pass_api_and_grad_scaler_path_take_the_same_cheap_steps(method):
    by_closure, by_hand_model, scaled = tiny_mlp().float(), tiny_mlp().float(), tiny_mlp().float()
    opts = [make(m, method, interval=2, reuse="look") for m in (by_closure, by_hand_model, scaled)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for t in range(6):
        x, y = batch(seed=t)
        x = x.float()
        opts[0].step(closure_for(by_closure, opts[0], x, y))
        run_by_hand(by_hand_model, opts[1], x, y)
        optim.run_step(opts[2], _scaled_closure(scaled, opts[2], x, y, scaler), scaler)
        for key in ("grad_norm", "full_step", "reuse_factor", "held_share"):
            if key in opts[0].last_stats:
                assert opts[2].last_stats[key] == pytest.approx(opts[0].last_stats[key], rel=1e-4)
    assert same_weights(by_closure, by_hand_model)
    for p, q in zip(by_closure.parameters(), scaled.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def _scaled_closure(model, opt, x, y, scaler):
    def closure(_):
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        scaler.scale(loss).backward()
        return loss
    return closure


@pytest.mark.parametrize("kwargs,message", [
    (dict(interval=0), "interval must be an integer >= 1"),
    (dict(interval=2.0), "interval must be an integer >= 1"),
    (dict(reuse="lookahead"), "reuse must be one of none, look"),
    (dict(reuse_alpha=-0.1), "reuse_alpha must be >= 0"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(tiny_mlp(), "bsam", **kwargs)


@pytest.mark.parametrize("opts,expected", [
    (["SAM.INTERVAL", "0"], "SAM.INTERVAL"),
    (["SAM.REUSE_ALPHA", "-1"], "SAM.REUSE_ALPHA"),
    (["SAM.REUSE", "lok"], "SAM.REUSE"),
])
def test_bad_config_values_are_one_line_errors_naming_the_key(tmp_path, opts, expected):
    path = tmp_path / "exp.yaml"
    path.write_text("TASK: classification\nSAM: {METHOD: bsam}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path, opts)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_run_stopped_between_two_full_steps_resumes_bit_identically(tiny_cls_cfg, monkeypatch):
    """Through the trainer: SAM.INTERVAL 3 with LookSAM reuse, stopped after 4 steps (the
    next one reuses v) and resumed, ends where an uninterrupted run ends."""
    from tasks.engine.trainer import Trainer

    sections = dict(TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 6},
                    SAM={"METHOD": "bsam", "RHO_MIN_END": 0.0, "INTERVAL": 3, "REUSE": "look"})
    reference = Trainer(config.load(tiny_cls_cfg("reference", **sections)))
    reference.fit()
    assert reference.optimizer.cycle.steps_begun == 6
    assert reference.history[-1]["full_step"] == pytest.approx(2 / 6)  # steps 0 and 3

    cfg = config.load(tiny_cls_cfg("stopped", **sections))
    step = Trainer._train_step

    def step_then_stop(self, batch):
        out = step(self, batch)
        if self.global_step == 3:  # the loop counts this step next: 4 done
            self._stop_signal = 15
        return out

    monkeypatch.setattr(Trainer, "_train_step", step_then_stop)
    assert Trainer(cfg).fit()["stopped"]
    monkeypatch.setattr(Trainer, "_train_step", step)
    resumed = Trainer(cfg, resume=True)
    assert resumed.optimizer.cycle.steps_begun == 4 and resumed.optimizer.cycle.v
    resumed.fit()
    for (key, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key
