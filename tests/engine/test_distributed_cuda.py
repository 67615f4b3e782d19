"""The CUDA side of the engine, run by ``pytest -m cuda`` (benchmarks/gpu_check.py) on a
machine with a GPU and skipped elsewhere: fp16 with its GradScaler, channels-last + bf16 +
compile through the trainer, and every collective on a one-rank NCCL group."""
import os
import socket

import pytest
import torch

from tasks.engine import config, distributed
from tasks.engine.trainer import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def trainer_for(cfg_factory, name, **sections) -> Trainer:
    return Trainer(config.load(cfg_factory(name, DEVICE="cuda", **sections)))


def test_fp16_bsam_steps_through_a_grad_scaler(tiny_cls_cfg):
    trainer = trainer_for(tiny_cls_cfg, "fp16", AMP="fp16", TRAIN={"MAX_ITERS_PER_EPOCH": 3, "CLIP_GRAD_NORM": 1.0})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.train_epoch(0)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.scaler.get_scale() > 0
    assert torch.isfinite(torch.tensor(row["train_loss"]))
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_channels_last_bf16_compiled_bsam_trains_without_recompiling(tiny_cls_cfg):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    trainer = trainer_for(tiny_cls_cfg, "fast", AMP="bf16", CHANNELS_LAST=True, COMPILE="aot_eager",
                          TRAIN={"MAX_ITERS_PER_EPOCH": 2})
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    trainer.train_epoch(0)
    graphs = counters["stats"]["unique_graphs"]
    row = trainer.train_epoch(1)
    assert counters["stats"]["unique_graphs"] == graphs and torch.isfinite(torch.tensor(row["train_loss"]))
    torch._dynamo.reset()


def test_collectives_on_a_one_rank_nccl_group(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    assert distributed.init_from_env(torch.device("cuda", 0)) == (0, 1)
    try:
        assert torch.distributed.get_backend() == "nccl"
        summed = distributed.all_reduce_sum(torch.arange(3, dtype=torch.float64))
        assert summed.device.type == "cpu" and summed.tolist() == [0.0, 1.0, 2.0]
        assert distributed.any_rank(True) and not distributed.any_rank(False)
        assert distributed.gather_to_main({"a": [1, 2]}) == [{"a": [1, 2]}]
        assert distributed.broadcast_object("x") == "x"
    finally:
        distributed.shutdown()
        monkeypatch.setattr(distributed, "_DEVICE", torch.device("cpu"))
