"""Shared by the tests/engine/test_reliability_*.py files: run a tool's main() in this
process as its ``__main__`` does, and check the one-line error contract."""
from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest


#: The training of :func:`finished`: one epoch of two iterations.
SHORT = dict(TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 2})


@pytest.fixture
def finished(tiny_cls_cfg, capsys):
    """A finished one-epoch run: (config path, run folder).  Import it into a test module."""
    import tools.train

    cfg = tiny_cls_cfg("first", **SHORT)
    assert run_main(tools.train.main, "--cfg", cfg, capsys=capsys)[0] == 0
    return cfg, run_folder(cfg)


def run_main(tool_main, *args, capsys) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``cli.run(tool_main)`` with ``args`` as the command line."""
    from tasks.engine import cli

    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["tool", *map(str, args)]):
        with pytest.raises(SystemExit) as exited:
            cli.run(tool_main)
    return exited.value.code or 0, capsys.readouterr().err


def one_error(code: int, err: str, *expected: str) -> str:
    """Exit status 2 and exactly one ``error:`` line on stderr holding every ``expected``."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_folder(cfg_path: Path) -> Path:
    """The run folder of a ``tiny_cls_cfg`` config."""
    return cfg_path.parent / "out" / "classification" / cfg_path.stem


_LIMITED = r"""
import contextlib, io, json, resource, sys
from unittest import mock
from tasks.engine import cli
from tasks.engine.torchfile import _address_space_used
calls = json.loads(sys.argv[1])
modules = {name: __import__(name, fromlist=["main"]) for name, _ in calls}
import tasks.classification, tasks.pose  # imported before the limit: only the load is measured
limit = _address_space_used() + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
results = []
for name, args in calls:
    err = io.StringIO()
    with mock.patch.object(sys, "argv", ["tool", *args]), contextlib.redirect_stderr(err):
        try:
            cli.run(modules[name].main)
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        except BaseException as other:  # MemoryError and the like: the test reports them
            code, _ = 99, err.write(f"{type(other).__name__}: {other}")
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def run_tools_limited(calls: list[tuple[str, list]], headroom: int) -> list[tuple[int, str]]:
    """Run each ``(tool module, arguments)`` through ``cli.run`` in one subprocess whose
    address space may grow by only ``headroom`` bytes once the tools are imported; returns
    ``(exit status, stderr)`` per call.  A tool that tries to allocate more fails there
    instead of taking the test machine down."""
    import json
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    calls = [[name, [str(a) for a in args]] for name, args in calls]
    proc = subprocess.run([sys.executable, "-c", _LIMITED, json.dumps(calls), str(headroom)],
                          cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
