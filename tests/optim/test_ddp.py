"""Two gloo processes with DistributedDataParallel give the single-process update on the
concatenated batch: every pass must use all-reduced gradients.  LookSAM's held direction v
(built from all-reduced gradients) is the same on every rank."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import optim
from optim_helpers import batch, closure_for, tiny_mlp

STEPS = 2
LOOK = dict(interval=2, reuse="look")


def train(model, opt, shards, steps=STEPS):
    for t in range(steps):
        x, y = shards[t]
        opt.step(closure_for(model, opt, x, y))


def build(model, **kw):
    return optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, method="bsam",
                       rho_min_end=0.0, model=model, **kw)


def held_v(opt) -> list:
    return [opt.cycle.v[p] for p in opt.param_groups[0]["params"]]


def worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        shards = []
        for t in range(STEPS + 1):
            x, y = batch(seed=t, n=16)
            shards.append((x.chunk(world)[rank], y.chunk(world)[rank]))
        model = DDP(tiny_mlp())
        train(model, build(model), shards)
        look_model = DDP(tiny_mlp())
        look = build(look_model, **LOOK)
        train(look_model, look, shards, steps=STEPS + 1)  # full, reused, full
        torch.save({"weights": model.module.state_dict(), "look": look_model.module.state_dict(),
                    "v": held_v(look)}, f"{out_file}.{rank}")
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    full_batches = [batch(seed=t, n=16) for t in range(STEPS + 1)]
    for name, kw, steps in (("weights", {}, STEPS), ("look", LOOK, STEPS + 1)):
        model = tiny_mlp()
        opt = build(model, **kw)
        train(model, opt, full_batches, steps)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(ranks[0][name][k], v, atol=1e-10, rtol=0, msg=k)
    for a, b, c in zip(ranks[0]["v"], ranks[1]["v"], held_v(opt)):
        assert torch.equal(a, b)  # bit for bit on every rank
        torch.testing.assert_close(a, c, atol=1e-10, rtol=0)
