"""AMP auto: bf16 only where the device computes it natively, and the run's first log line
says which precision runs and why."""
import pytest
import torch

from tasks.engine import acceleration
from tasks.engine.acceleration import bf16_support, resolve_amp
from tasks.engine.config import make_config

CPU = torch.device("cpu")


def cpu_flags(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                         (True, True, "bf16"), (False, False, "none")])
def test_auto_on_a_cpu_follows_its_bf16_instructions(monkeypatch, avx512_bf16, amx, expected):
    cpu_flags(monkeypatch, avx512_bf16, amx)
    amp, line = resolve_amp("auto", CPU)
    assert amp == expected
    assert line.startswith("precision: " + ("bfloat16" if expected == "bf16" else "float32"))
    assert ("AVX512-BF16" in line) == avx512_bf16 or expected == "none"
    if expected == "none":
        assert "neither AVX512-BF16 nor AMX" in line


def test_auto_without_a_way_to_tell_runs_float32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    amp, line = resolve_amp("auto", CPU)
    assert amp == "none" and "cannot tell" in line


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "none")])
def test_auto_on_a_gpu_asks_cuda(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Some GPU")
    assert bf16_support(torch.device("cuda", 0))[0] is supported
    amp, line = resolve_amp("auto", torch.device("cuda", 0))
    assert amp == expected and "Some GPU" in line


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_an_explicit_value_is_kept_and_said_so(monkeypatch, amp):
    cpu_flags(monkeypatch, False, False)
    chosen, line = resolve_amp(amp, CPU)
    assert chosen == amp and f"AMP {amp}, as configured" in line


def test_auto_is_a_valid_config_value_and_the_demo_default():
    assert make_config({"AMP": "auto"}).AMP == "auto"
    from conftest import REPO
    from tasks.engine.config import load

    assert load(REPO / "configs" / "demo" / "pose_bsam_demo.yaml").AMP == "auto"


@pytest.mark.parametrize("avx512_bf16", [True, False])
def test_the_first_line_of_a_run_log_names_the_precision(tiny_cls_cfg, monkeypatch, avx512_bf16):
    """In process, so the monkeypatched capability reaches the trainer."""
    from tasks.engine.trainer import Trainer
    from tasks.engine.config import load

    cpu_flags(monkeypatch, avx512_bf16, False)
    cfg = load(tiny_cls_cfg(AMP="auto"), ["TRAIN.END_EPOCH", "1", "TRAIN.MAX_ITERS_PER_EPOCH", "1"])
    trainer = Trainer(cfg)
    assert trainer.amp == ("bf16" if avx512_bf16 else "none")
    first = (trainer.run_dir / "train.log").read_text().splitlines()[0]
    assert ("precision: bfloat16" if avx512_bf16 else "precision: float32") in first
    assert "AMP auto on cpu" in first
