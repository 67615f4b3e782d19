"""The distributed and speed plumbing in one process: collectives take tensors of the run's
device, evaluation shards tile the val set in order, per-rank epoch seeds, the launch hint,
fp16 with its GradScaler through the optimizer's pass API, and torch.compile of the model."""
from types import SimpleNamespace

import pytest
import torch

from tasks.engine import config, distributed
from tasks.engine.acceleration import launch_hint
from tasks.engine.data import EvalShard, epoch_seed
from tasks.engine.errors import UserError
from tasks.engine.trainer import Trainer


class Recorded(Exception):
    """Raised by the fake collectives once they have looked at their tensors."""


def test_every_collective_takes_tensors_of_the_run_device(monkeypatch):
    """With the run's device set to ``meta`` (neither CPU nor the inputs' device), every
    collective the engine issues must receive meta tensors: what NCCL demands of CUDA."""
    seen = []

    def fake(name):
        def collective(*args, **kwargs):
            found = [a for a in args if isinstance(a, torch.Tensor)]
            found += [t for a in args if isinstance(a, list) for t in a]
            seen.append((name, {t.device.type for t in found}))
            raise Recorded
        return collective

    fake_dist = SimpleNamespace(all_reduce=fake("all_reduce"), all_gather=fake("all_gather"),
                                broadcast=fake("broadcast"), ReduceOp=torch.distributed.ReduceOp,
                                is_available=lambda: True, is_initialized=lambda: True,
                                get_rank=lambda: 0, get_world_size=lambda: 2)
    monkeypatch.setattr(distributed, "dist", fake_dist)
    monkeypatch.setattr(distributed, "_DEVICE", torch.device("meta"))
    calls = [lambda: distributed.all_reduce_sum(torch.ones(3, dtype=torch.float64)),
             lambda: distributed.any_rank(True), lambda: distributed.all_gather_objects({"a": 1}),
             lambda: distributed.gather_to_main([1, 2]), lambda: distributed.broadcast_object("x")]
    for call in calls:
        with pytest.raises(Recorded):
            call()
    assert len(seen) == len(calls)
    assert all(devices == {"meta"} for _, devices in seen), seen


@pytest.mark.parametrize("size,batch,world", [(16, 4, 3), (17, 4, 2), (5, 8, 3), (68, 16, 3), (10, 3, 1)])
def test_eval_shards_are_whole_batches_that_tile_the_set_in_order(size, batch, world):
    shards = [list(EvalShard(size, batch, rank, world)) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(size))
    for shard in shards:
        assert not shard or shard[0] % batch == 0  # every rank's batches are one-process batches


def test_epoch_seeds_are_pure_and_differ_by_rank_and_epoch():
    seeds = {(r, e): epoch_seed(3, r, e) for r in range(3) for e in range(4)}
    assert len(set(seeds.values())) == len(seeds)
    assert seeds[(1, 2)] == epoch_seed(3, 1, 2) and epoch_seed(4, 1, 2) != seeds[(1, 2)]


def test_launch_hint_for_several_gpus_in_one_process():
    hint = launch_hint("(0,1,2,3)", 1, 32, "configs/pose_bsam.yaml")
    assert "torchrun --nproc_per_node 4 tools/train.py --cfg configs/pose_bsam.yaml" in hint
    assert "total batch 4 x 32 = 128" in hint and "total batch 32)" in hint
    assert launch_hint([0, 1], 2, 32, "c.yaml") is None and launch_hint(None, 1, 32, "c.yaml") is None
    assert launch_hint("0", 1, 32, "c.yaml") is None


def test_fp16_on_a_cpu_only_machine_is_a_one_line_error(tiny_cls_cfg, tmp_path):
    cfg = config.load(tiny_cls_cfg("fp16", AMP="fp16", DEVICE="cpu"))
    with pytest.raises(UserError, match="AMP: fp16 needs a CUDA GPU") as err:
        Trainer(cfg)
    assert "\n" not in str(err.value) and "AMP bf16" in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


class CountingScaler(torch.amp.GradScaler):
    steps = 0

    def step(self, optimizer, *args, **kwargs):
        self.steps += 1
        return super().step(optimizer, *args, **kwargs)


def first_epoch_weights(cfg_path, scaler=None) -> dict:
    trainer = Trainer(config.load(cfg_path))
    trainer.scaler = scaler
    trainer.train_epoch(0)
    return trainer.model.state_dict()


@pytest.mark.parametrize("method", ["none", "sam", "bsam"])
def test_grad_scaler_path_gives_the_unscaled_update(tiny_cls_cfg, method):
    """fp16 training runs every pass through a GradScaler; with a scaler enabled on the CPU
    (fp32 numerics, power-of-two scale) the weights match the unscaled run's."""
    sections = dict(SAM={"METHOD": method, "RHO_MIN_END": 0.0}, DEVICE="cpu",
                    TRAIN={"MAX_ITERS_PER_EPOCH": 2})
    plain = first_epoch_weights(tiny_cls_cfg(f"plain_{method}", **sections))
    scaler = CountingScaler("cpu", init_scale=2.0**12)
    scaled = first_epoch_weights(tiny_cls_cfg(f"scaled_{method}", **sections), scaler)
    assert scaler.steps == 2 and scaler.get_scale() == 2.0**12  # two steps, none skipped
    for key, value in plain.items():
        torch.testing.assert_close(scaled[key], value, rtol=1e-5, atol=1e-6, msg=key)
    changed = first_epoch_weights(tiny_cls_cfg(f"base_{method}", **sections, SEED=4))
    assert any(not torch.equal(changed[k], v) for k, v in plain.items())  # the comparison can fail


def test_compiled_bsam_does_not_recompile_every_step(tiny_cls_cfg):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    cfg = config.load(tiny_cls_cfg("compiled", COMPILE="eager", DEVICE="cpu", TRAIN={"MAX_ITERS_PER_EPOCH": 2}))
    trainer = Trainer(cfg)
    trainer.train_epoch(0)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the passes did run through the compiled model
    trainer.train_epoch(1)  # six more passes, with batch norm frozen and not
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


def test_sync_bn_needs_cuda_and_channels_last_lays_out_the_model():
    from tasks.engine.acceleration import prepare_model

    cfg = config.make_config({"MODEL": {"NAME": "cifar_resnet20", "SYNC_BN": True}, "CHANNELS_LAST": True},
                             task="classification")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(UserError, match="MODEL.SYNC_BN needs CUDA devices"):
        prepare_model(model, cfg, torch.device("cpu"), world=2)
    prepared = prepare_model(model, cfg, torch.device("cpu"), world=1)  # one process: plain BN
    assert isinstance(prepared[1], torch.nn.BatchNorm2d)
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)
