"""One training loop for every task and every optimizer.

For each batch the trainer calls ``optimizer.step(closure)``; the closure zeroes the
gradients, runs ``task.loss`` and backpropagates.  SGD/Adam call it once, SAM twice, BSAM
three times; the wrappers keep batch-norm statistics still after the first pass.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import optim

from . import checkpoint, config as config_mod, distributed as dist
from .data import EpochSampler, make_loader, rng_state, seed_everything, set_rng_state, to_device
from .errors import UserError
from .io import save_json
from .records import DiagnosticsMeter, TensorBoard, make_logger, plot_curves, write_metrics_csv
from .optimization import build_optimizer, optimizer_summary
from .reference_keys import reference_key_notes
from .task import get as get_task


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("DEVICE: cuda was asked for but no CUDA device is available; "
                        "use DEVICE auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank())


def run_dir_of(cfg) -> Path:
    return Path(cfg.OUTPUT_DIR) / cfg.TASK / cfg.NAME


class Trainer:
    """Builds everything a run needs from a validated config and trains it (``fit``)."""

    def __init__(self, cfg, resume: bool = False):
        self.cfg = cfg
        self.device = pick_device(cfg.DEVICE)
        self.rank, self.world = dist.init_from_env(self.device.type)
        self.is_main = self.rank == 0
        seed_everything(cfg.SEED)
        if cfg.DETERMINISTIC:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK
        self.run_dir = run_dir_of(cfg)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        self.log = make_logger(self.run_dir if self.is_main else None)
        self.task = get_task(cfg.TASK)(cfg)

        train_set, val_set = self.task.build_datasets()
        if len(train_set) == 0:
            raise UserError(f"the training set of {cfg.TASK} is empty; check DATASET.ROOT and "
                            "DATASET.TRAIN_SET")
        self.sampler = EpochSampler(len(train_set), cfg.SEED, cfg.TRAIN.SHUFFLE, self.rank, self.world)
        collate = self.task.collate_fn()
        pin = cfg.PIN_MEMORY and self.device.type == "cuda"
        self.train_loader = make_loader(train_set, cfg.TRAIN.BATCH_SIZE_PER_GPU, cfg.WORKERS,
                                        self.sampler, collate, drop_last=False, pin_memory=pin,
                                        seed=cfg.SEED)
        self.val_loader = make_loader(val_set, cfg.TEST.BATCH_SIZE_PER_GPU, cfg.WORKERS, None,
                                      collate, pin_memory=pin, seed=cfg.SEED)
        self.iters_per_epoch = len(self.train_loader)
        if cfg.TRAIN.MAX_ITERS_PER_EPOCH:
            self.iters_per_epoch = min(self.iters_per_epoch, cfg.TRAIN.MAX_ITERS_PER_EPOCH)

        model = self.task.build_model().to(self.device)
        self.task.setup(model, self.train_loader, self.device)
        self.model = model
        self.net = model  # what the forward passes run through (DDP-wrapped when distributed)
        if self.world > 1:
            self.net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer, self.scheduler = self._build_optimizer()

        self.start_epoch, self.skip_iters, self.global_step = cfg.TRAIN.BEGIN_EPOCH, 0, 0
        self.history: list[dict] = []
        self.best: dict = {}
        self.partial: dict = {}
        self.tb = TensorBoard(self.run_dir if self.is_main else None)
        self._stop_signal = None
        if resume:
            self._resume()
        if self.is_main:
            config_mod.save(cfg, self.run_dir / "config.yaml")

    # -- building ---------------------------------------------------------------------
    def _build_optimizer(self):
        opt, scheduler, self.rho_scale = build_optimizer(
            self.cfg, self.task.param_groups(self.model), self.net, self.iters_per_epoch)
        return opt, scheduler

    def _autocast(self):
        if self.cfg.AMP == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- checkpoints -------------------------------------------------------------------
    def _state(self, epoch: int, iters_done: int) -> dict:
        """Resume point after ``iters_done`` iterations of ``epoch`` (0 = epoch complete
        and ``epoch`` is the next one)."""
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), epoch=epoch, iters_done=iters_done,
                    global_step=self.global_step, rng=rng_state(), history=self.history,
                    best=self.best, partial=self.partial, config=self.cfg.to_dict())

    def _save_last(self, epoch: int, iters_done: int) -> None:
        if self.is_main:
            checkpoint.save(self.run_dir / checkpoint.LAST, **self._state(epoch, iters_done))

    def _resume(self) -> None:
        state = checkpoint.load(self.run_dir / checkpoint.LAST)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise UserError(f"{self.run_dir / checkpoint.LAST} does not fit this config "
                            f"({str(err).splitlines()[0][:160]})") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.skip_iters = state["epoch"], state["iters_done"]
        self.global_step, self.history = state["global_step"], state["history"]
        self.best, self.partial = state["best"], state["partial"]
        set_rng_state(state["rng"])
        self.log.info(f"resumed from {self.run_dir / checkpoint.LAST}: epoch {self.start_epoch}, "
                      f"{self.skip_iters} iterations done")

    # -- the loop ----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        end = cfg.TRAIN.END_EPOCH
        self.log.info(f"{cfg.TASK}/{cfg.NAME}: {cfg.SAM.METHOD} over {cfg.TRAIN.OPTIMIZER}, "
                      f"{self.iters_per_epoch} it/epoch, epochs {self.start_epoch}..{end - 1}, "
                      f"device {self.device}, world {self.world}")
        self.log.info(optimizer_summary(cfg, self.optimizer))
        notes = reference_key_notes(cfg, self.task.defaults)
        if notes:
            self.log.info("reference keys applied differently or ignored: " + "; ".join(notes))
        start_time = time.perf_counter()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            for epoch in range(self.start_epoch, end):
                row = self.train_epoch(epoch)
                if row is None:  # stopped by a signal; checkpoint already written
                    return {"stopped": True, "epoch": epoch}
                if (epoch + 1) % cfg.TRAIN.EVAL_EVERY == 0 or epoch + 1 == end:
                    row.update({f"val_{k}": v for k, v in self._evaluate(self.run_dir).items()})
                self.history.append(row)
                self._end_epoch(epoch, row)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.tb.close()
        results = self._results(time.perf_counter() - start_time)
        if self.is_main:
            self.model.eval()
            results.update(self.task.on_fit_end(self.model, self.val_loader, self.run_dir))
            save_json(results, self.run_dir / "results.json")
        dist.barrier()
        return results

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        self.log.warning(f"signal {signal.Signals(signum).name}: saving a checkpoint after "
                         "this iteration, then exiting")

    def train_epoch(self, epoch: int) -> dict | None:
        self.net.train()
        skip = self.skip_iters if epoch == self.start_epoch else 0
        self.sampler.set_epoch(epoch, skip=skip * self.cfg.TRAIN.BATCH_SIZE_PER_GPU)
        sums = self.partial if skip else {}
        diagnostics = DiagnosticsMeter()
        diagnostics.__dict__.update(sums.pop("_diagnostics", {}))
        bar = tqdm(total=self.iters_per_epoch, initial=skip, disable=None if self.is_main else True,
                   desc=f"epoch {epoch}", dynamic_ncols=True, leave=False)
        it, started = skip, time.perf_counter()
        for batch in self.train_loader:
            if it >= self.iters_per_epoch:
                break
            loss, stats, n = self._train_step(to_device(batch, self.device))
            it += 1
            self.global_step += 1
            for key, value in {"loss": loss, **stats}.items():
                sums[key] = sums.get(key, 0.0) + value * n
            sums["_n"] = sums.get("_n", 0) + n
            diag = dict(getattr(self.optimizer, "last_stats", {}))
            diagnostics.add(diag)
            lr = self.optimizer.param_groups[0]["lr"]
            if self.is_main:
                self.tb.scalars("iter", {"loss": loss, "lr": lr, **diag}, self.global_step)
                postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}"}
                if "rho_min" in diag:
                    postfix["rho_min"] = f"{diag['rho_min']:.3g}"
                bar.set_postfix(postfix, refresh=False)
                bar.update()
                if it % self.cfg.PRINT_FREQ == 0 and bar.disable:
                    self.log.info(f"epoch {epoch} it {it}/{self.iters_per_epoch} loss {loss:.4f} lr {lr:.4g}")
            if self._stop_signal is not None and it < self.iters_per_epoch:
                self.partial = {**sums, "_diagnostics": dict(diagnostics.__dict__)}
                self._save_last(epoch, it)
                self.log.warning(f"stopped at epoch {epoch}, iteration {it}; resume with --resume")
                bar.close()
                return None
        bar.close()
        self.partial = {}
        totals = dist.all_reduce_sum(torch.tensor([sums.get(k, 0.0) for k in sorted(sums)],
                                                  dtype=torch.float64))
        totals = dict(zip(sorted(sums), totals.tolist()))
        n = max(totals.pop("_n", 1.0), 1.0)
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
               "train_seconds": time.perf_counter() - started}
        row.update({f"train_{k}": v / n for k, v in totals.items()})
        row.update(diagnostics.summary())
        return row

    def _train_step(self, batch) -> tuple[float, dict, int]:
        first: list = []

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, stats = self.task.loss(self.net, batch)
            loss.backward()
            if not first:
                first.append((loss.detach(), stats))
            return loss

        if isinstance(self.optimizer, optim.SharpnessAwareOptimizer):
            self.optimizer.rho_scale = self.rho_scale(self.global_step)
            self.optimizer.step(closure)
        else:  # gradients first: TRAIN.CLIP_GRAD_NORM clips them when step() begins
            closure()
            self.optimizer.step()
        self.scheduler.step()
        loss, stats = first[0]
        return float(loss), {k: float(v) for k, v in stats.items()}, self.task.batch_size(batch)

    def _evaluate(self, out_dir: Path | None) -> dict:
        metrics = {}
        if self.is_main:
            self.model.eval()
            with torch.no_grad(), self._autocast():
                metrics = self.task.evaluate(self.model, self.val_loader, out_dir)
            self.model.train()
        return dist.broadcast_object(metrics)

    def _end_epoch(self, epoch: int, row: dict) -> None:
        key = f"val_{self.task.main_metric}"
        if row.get(key) is not None:  # None: nothing to score against (no ground truth)
            better = (not self.best or (row[key] > self.best[key] if self.task.higher_is_better
                                        else row[key] < self.best[key]))
            if better:
                self.best = {k: v for k, v in row.items() if k.startswith("val_") or k == "epoch"}
                if self.is_main:
                    checkpoint.save(self.run_dir / checkpoint.BEST, model=self.model.state_dict(),
                                    epoch=epoch, metrics=self.best, config=self.cfg.to_dict())
        self._save_last(epoch + 1, 0)
        if self.is_main:
            self.tb.scalars("epoch", row, epoch)
            write_metrics_csv(self.history, self.run_dir / "metrics.csv")
            plot_curves(self.history, self.run_dir / "curves.png", self.task.main_metric)
            shown = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                             if k != "epoch" and isinstance(v, float) and math.isfinite(v)
                             and not k.removeprefix("val_").startswith(self.task.detail_metrics))
            self.log.info(f"epoch {epoch}: {shown}")
        dist.barrier()

    def _results(self, seconds: float) -> dict:
        last = self.history[-1] if self.history else {}
        return {"task": self.cfg.TASK, "name": self.cfg.NAME, "method": self.cfg.SAM.METHOD,
                "main_metric": self.task.main_metric, "epochs": len(self.history),
                "best": self.best, "final": last, "train_seconds": seconds,
                "run_dir": str(self.run_dir)}
