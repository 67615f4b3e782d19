"""Two gloo processes: accumulation with DDP's no_sync equals one process on the whole
batch; SAM.PERTURB local perturbs each rank with its own batch, keeps the ranks' weights
identical and all-reduces once per step (the collectives are counted)."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from accumulation_helpers import METHODS, build, local_direction, micro_step, plain_sgd
from optim_helpers import batch, grads_at, norm, tiny_mlp
from tasks.engine.collectives import CollectiveCounter

STEPS, WORLD, BATCH = 10, 2, 32
COUNTED = [("none", "global"), ("sam", "global"), ("sam", "local"), ("bsam", "global"),
           ("bsam", "local")]


def shard(t, rank):
    x, y = batch(seed=t, n=BATCH)
    return x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]


def weights(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        out = {"accumulated": {}, "local": {}, "calls": {}, "bytes": {}}
        for method in METHODS:  # 2 micro-batches of 8 per rank: one step on 32 images
            model = DDP(tiny_mlp())
            opt = build(model, method)
            for t in range(STEPS):
                micro_step(model, opt, *shard(t, rank), pieces=2, no_sync=model.no_sync)
            out["accumulated"][method] = weights(model)
        for method in ("sam", "bsam"):
            model = DDP(tiny_mlp())
            opt = build(model, method, perturb="local")
            for t in range(STEPS):
                micro_step(model, opt, *shard(t, rank), pieces=1, no_sync=model.no_sync)
                if t == 0:
                    out["local"][f"{method}_grad_norm_0"] = opt.last_stats["grad_norm"]
            out["local"][method] = weights(model)
        model = DDP(tiny_mlp())  # LookSAM under local perturbation: v travels with the direction
        opt = build(model, "bsam", perturb="local", interval=2, reuse="look")
        for t in range(3):
            micro_step(model, opt, *shard(t, rank), pieces=2, no_sync=model.no_sync)
        out["local_v"] = [opt.cycle.v[p] for p in opt.param_groups[0]["params"]]
        out["local_look"] = weights(model)
        for method, perturb in COUNTED:
            model = DDP(tiny_mlp())
            opt = build(model, method, **({"perturb": perturb} if method != "none" else {}))
            counter = CollectiveCounter()
            counter.watch(model)
            micro_step(model, opt, *shard(0, rank), pieces=2, no_sync=model.no_sync)
            counter.calls = counter.bytes = 0  # count the second step (buckets are built by then)
            with counter.python_all_reduces():
                micro_step(model, opt, *shard(1, rank), pieces=2, no_sync=model.no_sync)
            out["calls"][f"{method}_{perturb}"] = counter.calls
            out["bytes"][f"{method}_{perturb}"] = counter.bytes
        torch.save(out, f"{out_file}.{rank}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_accumulate_and_perturb_locally(tmp_path):
    out = tmp_path / "out.pt"
    mp.spawn(worker, args=(str(tmp_path / "init"), str(out)), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]

    for method in METHODS:  # global: the single-process step on the whole batch
        model = tiny_mlp()
        opt = build(model, method)
        for t in range(STEPS):
            micro_step(model, opt, *batch(seed=t, n=BATCH), pieces=1)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(ranks[0]["accumulated"][method][k], v, atol=1e-5, rtol=0,
                                       msg=f"{method} {k}")

    for method in ("sam", "bsam"):  # local: the mean of each rank's own direction
        model = tiny_mlp()
        w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
        for r in range(WORLD):  # rank r's perturbation came from its own g0
            own = norm(grads_at(model, w0, *shard(0, r))).item()
            assert abs(ranks[r]["local"][f"{method}_grad_norm_0"] - own) < 1e-9
        base = plain_sgd(model)
        for t in range(STEPS):
            x, y = batch(seed=t, n=BATCH)
            # per rank: its own direction; the ranks' mean is the micro-batch-weighted mean
            direction = local_direction(model, x, y, method, pieces=WORLD)
            for name, p in model.named_parameters():
                p.grad = direction[name].clone()
            base.step()
        for k, v in model.state_dict().items():
            assert torch.equal(ranks[0]["local"][method][k], ranks[1]["local"][method][k]), k
            torch.testing.assert_close(ranks[0]["local"][method][k], v, atol=1e-6, rtol=0,
                                       msg=f"local {method} {k}")

    for a, b in zip(ranks[0]["local_v"], ranks[1]["local_v"]):
        assert torch.equal(a, b)
    for k, v in ranks[0]["local_look"].items():
        assert torch.equal(v, ranks[1]["local_look"][k]), k

    calls = ranks[0]["calls"]
    assert calls == {"none_global": 1, "sam_global": 2, "sam_local": 1, "bsam_global": 3,
                     "bsam_local": 1}
    param_bytes = sum(p.numel() * p.element_size() for p in tiny_mlp().parameters())
    assert ranks[0]["bytes"]["bsam_global"] == 3 * param_bytes
    assert ranks[0]["bytes"]["bsam_local"] == param_bytes
