"""benchmarks/gpu_check.py keeps working between the rare days a GPU is lent: its CPU part
(torchrun trainings, a SIGTERM stop that exits 3 by design, --resume equal to an
uninterrupted run) runs here in its short mode, and the CUDA parts say they were skipped."""
import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_passes_its_cpu_part_in_short_mode():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:3]) for line in table[2:]}
    assert ("torchrun x1", "train 2 epochs: all-reduce, gather, sharded eval", "pass") in rows
    assert ("torchrun x1", "SIGTERM at step 3, --resume vs uninterrupted", "pass") in rows
    assert {status for part, _, status in rows if part != "torchrun x1"} == {"skipped"}
    assert "0 failed" in proc.stdout
