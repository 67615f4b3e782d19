"""Shared by the tests/engine/test_reliability_*.py files: run a tool's main() in this
process as its ``__main__`` does, and check the one-line error contract."""
from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest


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
