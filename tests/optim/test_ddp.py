"""Two gloo processes with DistributedDataParallel give the single-process update on the
concatenated batch: every pass must use all-reduced gradients."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import optim
from optim_helpers import batch, closure_for, tiny_mlp

STEPS = 2


def train(model, opt, shards):
    for t in range(STEPS):
        x, y = shards[t]
        opt.step(closure_for(model, opt, x, y))


def worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = DDP(tiny_mlp())
        opt = optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, method="bsam",
                          rho_min_end=0.0, model=model)
        shards = []
        for t in range(STEPS):
            x, y = batch(seed=t, n=16)
            shards.append((x.chunk(world)[rank], y.chunk(world)[rank]))
        train(model, opt, shards)
        if rank == 0:
            torch.save(model.module.state_dict(), out_file)
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    model = tiny_mlp()
    opt = optim.build(model.parameters(), "sgd", lr=0.1, momentum=0.9, method="bsam",
                      rho_min_end=0.0, model=model)
    train(model, opt, [batch(seed=t, n=16) for t in range(STEPS)])
    ddp_weights = torch.load(out, weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp_weights[k], v, atol=1e-10, rtol=0, msg=k)
