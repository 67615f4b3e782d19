"""Did a change slow the existing tests?  Per-test durations of two revisions, side by side.

    python benchmarks/test_durations.py a3624c6 64862a1          # before and after a branch
    python benchmarks/test_durations.py a3624c6 64862a1 --files tests/engine/test_train_tool.py -k torchrun

Each revision is checked out into a temporary git worktree beside this one (so ``../shared/data``
resolves as in the repository); the test files of the OLD revision are the "existing tests".  File
by file, the old revision runs the file, then the new one runs its copy of it, so that load from
other processes falls on both alike.  The table lists every test that exists in both and took at
least ``--min-seconds`` in either, with the new/old ratio of its call time (pytest's ``call``
phase), the largest ratios first, and the total of all shared tests.  Run it with
``OMP_NUM_THREADS=1`` on a machine as quiet as you have: single short tests jitter by more than
10% under load, so read the total and the long tests, and rerun a file that stands out.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DURATION = re.compile(r"^\s*([0-9.]+)s call\s+(\S+)$")


def worktree(rev: str, parent: Path) -> Path:
    path = parent / rev
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
                   check=True, capture_output=True)
    return path


def call_durations(tree: Path, test_file: str, select: str | None) -> dict[str, float]:
    """{test id: seconds of its call phase} for one file, run in ``tree``."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
                          "--durations-min=0", test_file, *(["-k", select] if select else [])],
                         cwd=tree, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    found = {}
    for line in out.stdout.splitlines():
        match = DURATION.match(line)
        if match:
            found[match.group(2)] = float(match.group(1))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--files", nargs="*", help="test files (default: every tests/**/test_*.py of OLD)")
    parser.add_argument("-k", dest="select", help="only the tests that match this pytest -k expression")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO.parent, prefix=".durations-") as tmp:
        old, new = worktree(args.old, Path(tmp)), worktree(args.new, Path(tmp))
        try:
            files = args.files or sorted(str(p.relative_to(old)) for p in (old / "tests").rglob("test_*.py"))
            before, after = {}, {}
            for test_file in files:
                before.update(call_durations(old, test_file, args.select))
                if (new / test_file).exists():
                    after.update(call_durations(new, test_file, args.select))
                print(f"  {test_file}: {len(before)} tests so far", file=sys.stderr, flush=True)
        finally:
            for tree in (old, new):
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    shared = sorted(set(before) & set(after))
    rows = [(after[t] / before[t], t) for t in shared if max(before[t], after[t]) >= args.min_seconds]
    print(f"{len(shared)} tests in both ({len(before)} in {args.old}, {len(after)} of them rerun in {args.new}); "
          f"total call time {sum(before[t] for t in shared):.1f} s -> {sum(after[t] for t in shared):.1f} s "
          f"({sum(after[t] for t in shared) / max(sum(before[t] for t in shared), 1e-9):.3f}x)")
    print(f"| test (>= {args.min_seconds:g} s) | {args.old} | {args.new} | new/old |")
    print("|---|---:|---:|---:|")
    for ratio, t in sorted(rows, reverse=True):
        print(f"| {t} | {before[t]:.2f} s | {after[t]:.2f} s | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
