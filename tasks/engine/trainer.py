"""One training loop for every task and every optimizer.

Each iteration is one optimizer step over ``TRAIN.ACCUMULATE_STEPS`` micro-batches, run by
:func:`optim.run_step` with a pass function that runs ``task.loss`` on one micro-batch and
backpropagates: SGD/Adam run one pass, SAM two, BSAM three (each sweeping every micro-batch);
the wrappers keep batch-norm statistics still after the first pass.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
import signal
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate
from tqdm import tqdm

import optim

from . import checkpoint, config as config_mod, distributed as dist, ema, resume as resume_check
from .acceleration import autocast, compile_model, launch_hint, make_scaler, prepare_model, resolve_amp
from .data import (EpochSampler, EvalShard, epoch_seed, make_loader, rng_state, seed_everything,
                   set_rng_state, to_device)
from .device import pick_device
from .errors import Interrupted, UserError
from .guard import NonFiniteSteps
from .io import save_json
from .optimization import build_optimizer, optimizer_summary
from .records import (DiagnosticsMeter, Progress, TensorBoard, epoch_line, make_logger, plot_curves,
                      write_metrics_csv)
from .reference_keys import reference_key_notes
from .run_dir import run_dir_of
from .task import get as get_task


class Trainer:
    """Builds everything a run needs from a validated config and trains it (``fit``)."""

    def __init__(self, cfg, resume: bool = False, accept_config_change: bool = False):
        self.cfg = cfg
        self.accept_config_change = accept_config_change
        self.device = pick_device(cfg.DEVICE)
        self.amp, amp_reason = resolve_amp(cfg.AMP, self.device)  # 'auto' -> bf16 or none
        self.scaler = make_scaler(self.amp, self.device)  # fp16 only; an error on a CPU-only machine
        self.rank, self.world = dist.init_from_env(self.device)
        self.is_main = self.rank == 0
        seed_everything(cfg.SEED)
        if cfg.DETERMINISTIC:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK
        self.run_dir = run_dir_of(cfg)
        state = self._resume_point() if resume else None  # refused before anything is written
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        self.log = make_logger(self.run_dir if self.is_main else None)
        self.log.info(amp_reason)
        self.task = get_task(cfg.TASK)(cfg)

        train_set, collate = self._build_loaders()
        self._build_model(train_set, collate)
        if self.rank:  # the same weights everywhere, but each rank its own augmentations
            seed_everything(epoch_seed(cfg.SEED, self.rank, 0))

        self.start_epoch, self.skip_iters, self.global_step = cfg.TRAIN.BEGIN_EPOCH, 0, 0
        self.history: list[dict] = []
        self.best: dict = {}
        self.partial: dict = {}
        self._stop_signal = None
        #: ``hook(epoch, row)`` after each epoch's checkpoint (a sweep reports to its pruner);
        #: an exception it raises ends ``fit`` with the run resumable from that checkpoint.
        self.epoch_hooks: list = []
        self._stop_now: str | None = None  # a second signal's name
        self._writing = False  # a checkpoint is being written: a second signal waits for it
        self.nonfinite = NonFiniteSteps(cfg.TRAIN.MAX_NONFINITE_STEPS)
        if resume:
            self._resume(state)
        self.tb = TensorBoard(self.run_dir if self.is_main else None)
        if self.is_main:
            config_mod.save(cfg, self.run_dir / "config.yaml")

    # -- building ---------------------------------------------------------------------
    def _build_loaders(self):
        """The training and validation loaders of this rank and the epoch length in optimizer
        steps; returns the training set and the collate function the model probe needs."""
        cfg = self.cfg
        train_set, val_set = self.task.build_datasets()
        if len(train_set) == 0:
            raise UserError(f"the training set of {cfg.TASK} is empty; check DATASET.ROOT and "
                            "DATASET.TRAIN_SET")
        self.sampler = EpochSampler(len(train_set), cfg.SEED, cfg.TRAIN.SHUFFLE, self.rank, self.world)
        collate = self.task.collate_fn()
        pin = cfg.PIN_MEMORY and self.device.type == "cuda"
        self.train_loader = make_loader(train_set, cfg.TRAIN.BATCH_SIZE_PER_GPU, cfg.WORKERS,
                                        self.sampler, self.task.train_collate_fn(), drop_last=False,
                                        pin_memory=pin, seed=cfg.SEED, persistent_workers=cfg.PERSISTENT_WORKERS)
        # each rank evaluates its block of the val set; the task gathers it on rank 0
        val_shard = EvalShard(len(val_set), cfg.TEST.BATCH_SIZE_PER_GPU, self.rank, self.world)
        self.val_loader = make_loader(val_set, cfg.TEST.BATCH_SIZE_PER_GPU, cfg.WORKERS, val_shard,
                                      collate, pin_memory=pin, seed=cfg.SEED,
                                      persistent_workers=cfg.PERSISTENT_WORKERS)
        # an iteration is one optimizer step of TRAIN.ACCUMULATE_STEPS micro-batches
        self.iters_per_epoch = math.ceil(len(self.train_loader) / cfg.TRAIN.ACCUMULATE_STEPS)
        if cfg.TRAIN.MAX_ITERS_PER_EPOCH:
            self.iters_per_epoch = min(self.iters_per_epoch, cfg.TRAIN.MAX_ITERS_PER_EPOCH)
        self.progress = Progress(self.log, self.iters_per_epoch, cfg.TRAIN.END_EPOCH, cfg.PRINT_FREQ)
        return train_set, collate

    def _build_model(self, train_set, collate) -> None:
        """The model on its device (DDP-wrapped, compiled as configured), the optimizer, the
        LR schedule and the weight average."""
        cfg = self.cfg
        model = self.task.build_model().to(self.device)
        self.task.setup(model, self.train_loader, self.device)
        self.iters_per_epoch -= self._single_sample_batch_left_out(model, train_set, collate)
        self.model = prepare_model(model, cfg, self.device, self.world)
        self.net = self.model  # what the forward passes run through (DDP-wrapped when distributed)
        if dist.is_distributed():
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer, self.scheduler = self._build_optimizer()
        # a backward that does not all-reduce (micro-batches before the last, local perturbation)
        self.no_sync = self.net.no_sync if dist.is_distributed() else contextlib.nullcontext
        self.ema = ema.WeightAverage(self.model, cfg.TRAIN.EMA_DECAY)
        self.net = compile_model(self.net, cfg.COMPILE)

    def _single_sample_batch_left_out(self, model, train_set, collate) -> int:
        """1 when this rank's last batch of an epoch would hold one sample that the model
        cannot train on (batch norm over a 1x1 map sees one value per channel), so that the
        epoch ends before it instead of failing after all its work; 0 otherwise.  A config
        whose every batch is such a sample is refused before training."""
        size = self.cfg.TRAIN.BATCH_SIZE_PER_GPU
        last = len(self.sampler) % size or size
        steps_reach_it = self.iters_per_epoch * self.cfg.TRAIN.ACCUMULATE_STEPS >= len(self.train_loader)
        if last != 1 or (size > 1 and not steps_reach_it):  # with accumulation: its whole step
            return 0
        saved = rng_state()  # the probe's augmentation must not shift the run's random streams
        try:
            batch = (collate or default_collate)([train_set[0]])
        finally:
            set_rng_state(saved)
        try:
            with torch.no_grad(), self._autocast():
                self.task.loss(copy.deepcopy(model).train(),
                               to_device(batch, self.device, self.cfg.CHANNELS_LAST))
            return 0
        except ValueError as err:
            if "Expected more than 1 value per channel" not in str(err):
                raise
        if size == 1:
            raise UserError("TRAIN.BATCH_SIZE_PER_GPU 1: the model normalises a 1x1 map with batch "
                            "norm, which one sample cannot train (one value per channel); use a batch "
                            "size >= 2 or a larger input (DATASET.IMAGE_SIZE / MODEL.IMAGE_SIZE)")
        self.log.warning(f"the last batch of each epoch would hold 1 sample, which the model's batch "
                         f"norm over a 1x1 map cannot train on; it is left out ({len(self.sampler)} "
                         f"samples, batches of {size})")
        return 1

    def _build_optimizer(self):
        opt, scheduler, self.rho_scale = build_optimizer(
            self.cfg, self.task.param_groups(self.model), self.net, self.iters_per_epoch)
        return opt, scheduler

    def _autocast(self):
        return autocast(self.amp, self.device)

    # -- checkpoints -------------------------------------------------------------------
    def _state(self, epoch: int, iters_done: int, ranks: list[dict]) -> dict:
        """Resume point after ``iters_done`` iterations of ``epoch`` (0 = epoch complete
        and ``epoch`` is the next one).  ``ranks``: every rank's generators and partial
        epoch sums (``rng`` and ``partial`` are lists indexed by rank)."""
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), epoch=epoch, iters_done=iters_done,
                    global_step=self.global_step, rng=[r["rng"] for r in ranks],
                    history=self.history, best=self.best,
                    partial=[r["partial"] for r in ranks], config=self.cfg.to_dict(),
                    **self.ema.checkpoint_fields(),
                    **({"scaler": self.scaler.state_dict()} if self.scaler else {}))

    def _save_last(self, epoch: int, iters_done: int) -> None:
        """Called by every rank at the same point; rank 0 writes the one checkpoint."""
        ranks = dist.gather_to_main({"rng": rng_state(), "partial": self.partial})
        if self.is_main:
            with self._uninterrupted():
                checkpoint.save(self.run_dir / checkpoint.LAST, **self._state(epoch, iters_done, ranks))

    @contextlib.contextmanager
    def _uninterrupted(self):
        """A second signal during a checkpoint write stops the run once the file is complete."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._stop_now:
            raise Interrupted(self._stop_now)

    def _resume_point(self) -> dict:
        """The checkpoint to continue, once its config was compared with this one."""
        state = checkpoint.load(self.run_dir / checkpoint.LAST)
        self._config_changes = resume_check.check_config(
            state.get("config"), self.cfg.to_dict(), self.accept_config_change,
            self.run_dir / checkpoint.LAST)
        return state

    def _resume(self, state: dict) -> None:
        fresh = resume_check.group_hyperparameters(self.optimizer)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise UserError(f"{self.run_dir / checkpoint.LAST} does not fit this config "
                            f"({str(err).splitlines()[0][:160]})") from None
        ema_note = self.ema.load(state, self.model, self.run_dir / checkpoint.LAST)
        if ema_note:
            self.log.warning(ema_note)
        if self._config_changes:
            resume_check.apply_hyperparameters(self.optimizer, self.scheduler, fresh)
            self.log.warning(f"config changes accepted: {'; '.join(self._config_changes)}")
        self.start_epoch, self.skip_iters = state["epoch"], state["iters_done"]
        self.global_step, self.history = state["global_step"], state["history"]
        self.best = state["best"]
        self._check_resumed(state)
        rngs, partials = state["rng"], state["partial"]
        if len(rngs) == self.world:
            try:
                set_rng_state(rngs[self.rank])
            except (TypeError, ValueError, IndexError, RuntimeError) as err:
                raise UserError(f"{self.run_dir / checkpoint.LAST}: field 'rng' holds generator states "
                                f"that cannot be set ({str(err).splitlines()[0][:120]}); resume from "
                                "another run or start over with --overwrite") from None
            self.partial = partials[self.rank] if self.skip_iters else {}
        elif self.skip_iters:
            raise UserError(f"{self.run_dir / checkpoint.LAST} was stopped in the middle of an epoch "
                            f"by a run of {len(rngs)} process(es); resume it with {len(rngs)} "
                            f"(this run has {self.world})")
        else:  # another number of processes, at an epoch boundary: fresh per-rank streams
            seed_everything(epoch_seed(self.cfg.SEED, self.rank, self.start_epoch))
        self.log.info(f"resumed from {self.run_dir / checkpoint.LAST}: epoch {self.start_epoch}, "
                      f"{self.skip_iters} iterations done")

    def _check_resumed(self, state: dict) -> None:
        """What :func:`checkpoint.check_fields` cannot know: the fields against this run."""
        path, key = self.run_dir / checkpoint.LAST, f"val_{self.task.main_metric}"
        if self.best and not isinstance(self.best.get(key), (int, float)):
            raise UserError(f"{path}: field 'best' has no number {key!r} ({str(self.best)[:60]}); resume "
                            "from another run or start over with --overwrite")
        if self.skip_iters >= self.iters_per_epoch:
            raise UserError(f"{path}: field 'iters_done' is {self.skip_iters}, but an epoch of this "
                            f"config has {self.iters_per_epoch} iterations; resume from another run")
        params = {id(p): p for group in self.optimizer.param_groups for p in group["params"]}
        for owner in (self.optimizer, getattr(self.optimizer, "base_optimizer", None)):
            for param, slots in (getattr(owner, "state", None) or {}).items():
                for name, value in (slots.items() if isinstance(slots, dict) else ()):
                    if (id(param) in params and isinstance(value, torch.Tensor) and value.dim() > 0
                            and value.shape != param.shape):
                        raise UserError(f"{path}: optimizer state {name!r} has shape {list(value.shape)} "
                                        f"for a parameter of shape {list(param.shape)}; the file was "
                                        "edited or belongs to another model: resume from another run")

    # -- the loop ----------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        end = cfg.TRAIN.END_EPOCH
        self.log.info(f"{cfg.TASK}/{cfg.NAME}: {cfg.SAM.METHOD} over {cfg.TRAIN.OPTIMIZER}, "
                      f"{self.iters_per_epoch} it/epoch, epochs {self.start_epoch}..{end - 1}, "
                      f"device {self.device}, world {self.world}, {batch_line(self.world, cfg.TRAIN)}")
        hint = launch_hint(cfg.GPUS, self.world, cfg.TRAIN.BATCH_SIZE_PER_GPU, cfg.source)
        if hint:
            self.log.warning(hint)
        self.log.info(optimizer_summary(cfg, self.optimizer))
        notes = reference_key_notes(cfg)
        if notes:
            self.log.info("reference keys applied differently or ignored: " + "; ".join(notes))
        if self.start_epoch >= end and (self.run_dir / "results.json").is_file():
            self.log.info(f"the run finished already (epoch {end - 1}); its results.json is kept as it "
                          "was (raise TRAIN.END_EPOCH with --accept-config-change to train further)")
            self.tb.close()
            return self._results(float("nan"))
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
                    if self.ema:
                        row.update(ema.columns(self._evaluate(None, self.ema.module)))
                self.history.append(row)
                self._end_epoch(epoch, row)
                for hook in self.epoch_hooks:
                    hook(epoch, row)
                if epoch + 1 < end and dist.any_rank(self._stop_signal is not None):
                    self.log.warning(f"stopped after epoch {epoch}; resume with --resume")
                    return {"stopped": True, "epoch": epoch + 1}
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.tb.close()
        results = self._results(time.perf_counter() - start_time)
        if self.is_main:
            self.model.eval()
            try:
                results.update(self.task.on_fit_end(self.model, self.val_loader, self.run_dir))
            except UserError as err:  # e.g. a failed export: the run fails, its metrics are kept
                save_json({**results, "error": str(err)}, self.run_dir / "results.json")
                raise
            save_json(results, self.run_dir / "results.json")
        dist.barrier()
        return results

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second signal: stop now, after a checkpoint write
            self._stop_now = signal.Signals(signum).name
            if not self._writing:
                raise Interrupted(self._stop_now)
            return
        self._stop_signal = signum
        self.log.warning(f"signal {signal.Signals(signum).name}: saving a checkpoint after "
                         "this iteration, then exiting")

    def train_epoch(self, epoch: int) -> dict | None:
        self.net.train()
        skip = self.skip_iters if epoch == self.start_epoch else 0
        self.sampler.set_epoch(epoch, skip=skip * self.cfg.TRAIN.ACCUMULATE_STEPS
                               * self.cfg.TRAIN.BATCH_SIZE_PER_GPU)
        # loader workers' seeds: a function of (seed, rank, epoch), so a resume is exact with them
        self.train_loader.generator.manual_seed(epoch_seed(self.cfg.SEED, self.rank, epoch))
        sums = self.partial if skip else {}
        diagnostics = DiagnosticsMeter(sums.pop("_diagnostics", None))
        bar = tqdm(total=self.iters_per_epoch, initial=skip, disable=None if self.is_main else True,
                   desc=f"epoch {epoch}", dynamic_ncols=True, leave=False)
        it, started = skip, time.perf_counter()
        for micro_batches in grouped(self.train_loader, self.cfg.TRAIN.ACCUMULATE_STEPS):
            if it >= self.iters_per_epoch:
                break
            loss, stats, n = self._train_step(
                [to_device(batch, self.device, self.cfg.CHANNELS_LAST) for batch in micro_batches])
            # after the optimizer step: what follows each step (records, progress) goes below
            it += 1
            self.global_step += 1
            for key, value in {"loss": loss, **stats}.items():
                sums[key] = sums.get(key, 0.0) + value * n
            sums["_n"] = sums.get("_n", 0) + n
            diag = dict(getattr(self.optimizer, "last_stats", {}))
            self.nonfinite.observe(loss, diag, f"epoch {epoch}, iteration {it}")
            diagnostics.add(diag)
            lr = self.optimizer.param_groups[0]["lr"]  # group 0's LR is the one logged
            if self.is_main:
                self.tb.scalars("iter", {"loss": loss, "lr": lr, **diag}, self.global_step)
                postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}"}
                if "rho_min" in diag:
                    postfix["rho_min"] = f"{diag['rho_min']:.3g}"
                bar.set_postfix(postfix, refresh=False)
                bar.update()
                self.progress.step(epoch, it, started, loss, lr, console=bool(bar.disable))
            # one agreed decision: a signal on any rank stops every rank after this iteration
            if dist.any_rank(self._stop_signal is not None) and it < self.iters_per_epoch:
                self.partial = {**sums, "_diagnostics": diagnostics.state()}
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

    def _train_step(self, micro_batches: list) -> tuple[float, dict, int]:
        """One optimizer step over ``micro_batches`` (TRAIN.ACCUMULATE_STEPS of them, fewer at
        the end of an epoch): each loss weighted by its share of the images, so the step is
        one step on their union.  Returns the first pass's loss and stats (means over the
        images) and the number of images."""
        sizes = [self.task.batch_size(batch) for batch in micro_batches]
        first: dict[int, tuple] = {}
        scaler = self.scaler

        def run_pass(i: int):
            with self._autocast():
                loss, stats = self.task.loss(self.net, micro_batches[i])
            weighted = loss * (sizes[i] / sum(sizes)) if len(sizes) > 1 else loss
            (scaler.scale(weighted) if scaler else weighted).backward()
            first.setdefault(i, (loss.detach(), stats))
            return loss

        if isinstance(self.optimizer, optim.SharpnessAwareOptimizer):
            self.optimizer.rho_scale = self.rho_scale(self.global_step)
        optim.run_step(self.optimizer, run_pass, scaler, micro_batches=len(micro_batches),
                       no_sync=self.no_sync)
        self.ema.update(self.model)
        self.scheduler.step()
        if len(sizes) == 1:
            loss, stats = first[0]
            return float(loss), {k: float(v) for k, v in stats.items()}, sizes[0]
        share = [size / sum(sizes) for size in sizes]
        loss = sum(float(first[i][0]) * w for i, w in enumerate(share))
        stats = {k: sum(float(first[i][1][k]) * w for i, w in enumerate(share)) for k in first[0][1]}
        return loss, stats, sum(sizes)

    def _evaluate(self, out_dir: Path | None, model=None) -> dict:
        """Every rank predicts its shard of the val set; the task gathers and scores on rank 0.
        ``model``: another model to score (the EMA), default the trained one."""
        self.model.eval()
        with torch.no_grad(), self._autocast():
            metrics = self.task.evaluate(model or self.model, self.val_loader,
                                         out_dir if self.is_main else None)
        self.model.train()
        return dist.broadcast_object(metrics)

    def _end_epoch(self, epoch: int, row: dict) -> None:
        key = f"val_{self.task.main_metric}"
        which, scores = ema.better_weights(row, key, self.task.higher_is_better)  # raw or EMA
        if scores.get(key) is not None and math.isfinite(scores[key]):  # None: no ground truth to score
            better = (not self.best or (scores[key] > self.best[key] if self.task.higher_is_better
                                        else scores[key] < self.best[key]))
            if better:
                flag = {"ema_weights": int(which == "ema")} if self.ema else {}  # best holds numbers only
                self.best = {"epoch": epoch, **scores, **flag}
                if self.is_main:
                    weights = self.ema.module if which == "ema" else self.model
                    with self._uninterrupted():
                        checkpoint.save(self.run_dir / checkpoint.BEST, model=weights.state_dict(),
                                        epoch=epoch, metrics=self.best, config=self.cfg.to_dict(),
                                        **({"weights": which} if self.ema else {}))
        self._save_last(epoch + 1, 0)
        if self.is_main:
            self.tb.scalars("epoch", row, epoch)
            write_metrics_csv(self.history, self.run_dir / "metrics.csv")
            plot_curves(self.history, self.run_dir / "curves.png", self.task.main_metric)
            self.log.info(epoch_line(epoch, row, self.task.detail_metrics))
        dist.barrier()

    def _results(self, seconds: float) -> dict:
        last = self.history[-1] if self.history else {}
        return {"task": self.cfg.TASK, "name": self.cfg.NAME, "method": self.cfg.SAM.METHOD,
                "main_metric": self.task.main_metric, "epochs": len(self.history),
                "best": self.best, "final": last, "train_seconds": seconds,
                "run_dir": str(self.run_dir)}


def grouped(loader, size: int):
    """Lists of ``size`` consecutive batches of ``loader`` (the last list may be shorter)."""
    batches = iter(loader)
    while group := list(itertools.islice(batches, size)):
        yield group


def batch_line(world: int, train_cfg) -> str:
    """The effective batch of one optimizer step, for the start-up line."""
    per_gpu, steps = train_cfg.BATCH_SIZE_PER_GPU, train_cfg.ACCUMULATE_STEPS
    if steps == 1:
        return f"total batch {world} x {per_gpu} = {world * per_gpu}"
    return (f"total batch {world} process(es) x {per_gpu} x {steps} accumulated = "
            f"{world * per_gpu * steps}")
