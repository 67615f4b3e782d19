"""The benchmark's order of work: plan the runs, reuse finished ones, train the rest (one
process per run, several processes sharing a checkout), compare flatness, write results."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tasks.engine.io import atomic_write, save_figure, save_json

from . import tuning
from .measure import compared, flatness_comparison, measure_run
from .plan import (DEFAULT_DATA, PRESETS, REPO, TUNED, Job, Preset, count_classes, job_opts, plan_jobs, quoted,
                   recipe_opts, shown_command, short)
from .report import figure, markdown, summarise
from .runs import claimed, estimate_seconds, hours, keep_weights, reusable, train


@dataclass
class Bench:
    """Everything the steps share, resolved once from the command line."""
    args: object
    preset_name: str
    preset: Preset
    epochs: int
    out: Path
    ledger: Path | None
    recipe: list[str]
    jobs: list[Job]
    num_classes: int
    tuned: dict[str, list[str]] = field(default_factory=dict)  # a tuned method's chosen --opts

    @property
    def run_root(self) -> Path:
        return self.out / "runs"

    def opts(self, job: Job) -> list[str]:
        return [*self.recipe, *job_opts(job, self.preset, self.epochs, self.tuned)]

    def ready(self, job: Job) -> bool:
        """A tuned row trains once its sweep has chosen."""
        return not job.method.endswith("_tuned") or job.method in self.tuned


def setup(args) -> Bench:
    """Resolve paths (user paths are relative to where they ran this; runs and commands start
    in the repository root), the preset, the ledger and the plan."""
    args.data, args.cfg = args.data.resolve(), args.cfg.resolve()
    args.out = args.out.resolve() if args.out else None
    os.chdir(REPO)
    name = args.preset if args.preset != "auto" else ("cpu" if args.data == DEFAULT_DATA.resolve() else "paper")
    base = PRESETS[name]
    preset = Preset(**{**base.__dict__, "model": args.model or base.model,
                       "workers": base.workers if args.workers is None else args.workers})
    epochs = args.epochs or preset.epochs
    args.noise = preset.noise if args.noise is None else args.noise
    out = (args.out or REPO / "output" / "benchmarks" / f"reproduce_cifar_{name}").resolve()
    ledger = args.ledger.resolve() if args.ledger else (
        REPO / "benchmarks" / "results" / f"reproduce_cifar_{name}" if name == "converged"
        and not args.max_iters and args.epochs is None else None)
    if not args.data.exists():
        sys.exit(f"error: data folder {args.data} not found; pass --data with the folder holding "
                 f"cifar-10-batches-py / cifar-100-python (or an ImageFolder with train/ and test/)")
    num_classes = count_classes(args.data)
    recipe = [*recipe_opts(args.data, preset, num_classes, epochs, args.max_iters), "OUTPUT_DIR", short(out / "runs")]
    bench = Bench(args, name, preset, epochs, out, ledger, recipe, plan_jobs(preset, args), num_classes)
    bench.tuned = _tuned_values(bench)
    return bench


def _tuned_values(bench: Bench) -> dict[str, list[str]]:
    methods = [m for m in TUNED if m in bench.args.methods]
    chosen = {m: tuning.chosen_values(m, bench.out / "sweeps", bench.ledger, bench.args.tune_trials) for m in methods}
    return {m: values for m, values in chosen.items() if values}


def commands(bench: Bench) -> list[str]:
    """Every run's command (bash), as the README shows them; the sweeps' first."""
    lines = [f"RECIPE=({quoted(bench.recipe)})"]
    for method in (m for m in TUNED if m in bench.args.methods):
        command = tuning.sweep_command(method, bench.args.cfg, bench.recipe, bench.out / "sweeps",
                                       bench.args.tune_trials, bench.ledger)
        lines.append(f"# the sweep that tunes {method}\n" + tuning.shown(command))
    for job in bench.jobs:
        opts = job_opts(job, bench.preset, bench.epochs, bench.tuned)
        note = "" if bench.ready(job) else " (the values come from its sweep)"
        lines.append(f"# {job.label(bench.epochs)}, seed {job.seed}{note}\n" + shown_command(bench.args.cfg, opts))
    return lines


def finished_records(bench: Bench) -> list[dict]:
    return [r for r in (reusable(job, bench.opts(job), bench.run_root, bench.ledger)
                        for job in bench.jobs if bench.ready(job)) if r]


def list_runs(bench: Bench, records: list[dict]) -> None:
    """Each run's state (done, or its estimated time) and the commands."""
    done = {r["name"] for r in records}
    for job in bench.jobs:
        state = "done" if job.name in done else hours(estimate_seconds(job, bench.epochs, bench.preset, records))
        print(f"  {job.name:28s} {state}{'' if bench.ready(job) else ', after its sweep'}")
    print("\n".join(commands(bench)))


def train_one(bench: Bench, job: Job, records: list[dict]) -> str:
    """Train and measure ``job`` unless another process holds it or finished it; returns
    "trained", "finished" (by another process) or "held" (another process trains it)."""
    opts = bench.opts(job)
    with claimed(bench.run_root / ".claims" / f"{job.name}.lock") as mine:
        record = reusable(job, opts, bench.run_root, bench.ledger) if mine else None
        if not mine or record:
            print(f"  {'finished' if record else 'being trained'} by another benchmark process: next run", flush=True)
            if record:
                records.append(record)
            return "finished" if record else "held"
        run_dir = bench.run_root / "classification" / job.name
        results, cpu_seconds = train(bench.args.cfg, opts, run_dir, bench.out / "logs" / f"{job.name}.log",
                                     bench.args.threads)
        torch.set_num_threads(bench.args.threads)
        record = measure_run(job, bench.args.cfg, opts, run_dir, results, cpu_seconds, bench.args)
        save_json(record, run_dir / "record.json")
        if bench.ledger:
            save_json(record, bench.ledger / f"{job.name}.json")
            if job in compared(bench.jobs):
                keep_weights(run_dir, bench.ledger / f"{job.name}.pth")
    records.append(record)
    flat = f"  top eig {record['top_eig']:.4g}  trace {record['trace']:.4g}" if "top_eig" in record else ""
    print(f"  test {record['acc']:.2f}  train {record['train_acc']:.2f}{flat}  ({record['wall_seconds']:.0f} s)",
          flush=True)
    return "trained"


def train_remaining(bench: Bench, records: list[dict]) -> list[str]:
    """Train every ready run without a record; returns the names still not done."""
    done = {r["name"] for r in records}
    todo = [job for job in bench.jobs if job.name not in done and bench.ready(job)]
    left = [job.name for job in bench.jobs if job.name not in done and not bench.ready(job)]
    for i, job in enumerate(todo):
        remaining = sum(estimate_seconds(j, bench.epochs, bench.preset, records) for j in todo[i:])
        print(f"[{len(records) + 1}/{len(bench.jobs)}] {job.name}: {len(todo) - i} runs remain, about "
              f"{hours(remaining)}", flush=True)
        if train_one(bench, job, records) == "held":
            left.append(job.name)
    return left


def comparison_weights(bench: Bench, remaining: list[str]) -> dict[str, Path]:
    """Where the compared runs' final weights are (run folder or ledger)."""
    weights = {}
    for job in compared(bench.jobs):
        for path in (bench.run_root / "classification" / job.name / "checkpoint_last.pth",
                     *([bench.ledger / f"{job.name}.pth"] if bench.ledger else [])):
            if path.is_file() and job.name not in remaining:
                weights.setdefault(job.name, path)
    return weights


def write_results(bench: Bench, records: list[dict], remaining: list[str]) -> None:
    """results.md, results.json and the figure, from the finished runs."""
    args = bench.args
    planned = {job.name: bench.opts(job) for job in bench.jobs}
    flatness_comparison(bench.jobs, planned, comparison_weights(bench, remaining), args.cfg, bench.out,
                        bench.ledger, args)
    rows = summarise(records, bench.jobs, bench.epochs)
    meta = {"preset": bench.preset_name, "model": bench.preset.model, "data": short(args.data),
            "epochs": bench.epochs, "per_class": bench.preset.per_class, "amp": bench.preset.amp,
            "max_iters": args.max_iters, "seeds": args.seeds, "noise": args.noise,
            "device": "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} thread(s)",
            "flatness_batches": args.flatness_batches, "lanczos_iters": args.lanczos_iters,
            "trace_samples": args.trace_samples, "commands": commands(bench), "remaining": remaining,
            "tuning": tuning.tuning_lines(bench.out / "sweeps", bench.ledger, args.tune_trials,
                                          [m for m in TUNED if m in args.methods])}
    text = markdown(rows, meta)
    atomic_write(bench.out / "results.md", lambda tmp: Path(tmp).write_text(text))
    save_json({"meta": meta, "rows": rows, "runs": records}, bench.out / "results.json")
    save_figure(figure(rows, records), bench.out / "reproduce_cifar.png")
    print()
    print(text)
    print(f"wrote {bench.out / 'results.md'}, {bench.out / 'results.json'}, {bench.out / 'reproduce_cifar.png'}")


def run(args) -> int:
    """The whole benchmark (``--dry-run``: the plan only; ``--report``: no training)."""
    bench = setup(args)
    records = finished_records(bench)
    todo = [job for job in bench.jobs if job.name not in {r["name"] for r in records}]
    remaining = sum(estimate_seconds(job, bench.epochs, bench.preset, records) for job in todo)
    remaining += sum(args.tune_trials * estimate_seconds(Job(m, 1, 0.0, 0, "default"), bench.epochs, bench.preset, records)
                     for m in TUNED if m in args.methods and m not in bench.tuned)  # the sweeps
    print(f"{bench.preset_name}: {len(bench.jobs)} runs of {bench.preset.model} ({bench.num_classes} classes, "
          f"{bench.epochs} epochs), "
          f"{len(records)} done, {len(todo)} to run, estimated {hours(remaining)} "
          f"({args.threads} thread(s)) -> {bench.out}")
    if args.dry_run or args.report:
        list_runs(bench, records)
        if args.dry_run:
            return 0
        left = [job.name for job in todo]
    else:
        tuned = [m for m in TUNED if m in args.methods]
        if tuned:
            tuning.run_sweeps(args.cfg, bench.recipe, bench.out / "sweeps", bench.ledger, args.tune_trials,
                              args.threads, tuned)
            bench.tuned = _tuned_values(bench)
        left = train_remaining(bench, records)
    write_results(bench, records, left)
    return 0
