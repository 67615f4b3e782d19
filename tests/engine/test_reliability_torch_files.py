"""Every torch file a tool reads is checked before torch allocates for it: what it is (a
regular file, not a FIFO, folder or device) and what it declares (records that inflate far
beyond the file, tensors larger than their records, more than the memory left)."""
import os
import zipfile

import pytest
import torch

import tools.eval
from reliability_helpers import one_error, run_folder, run_main, run_tools_limited, snapshot
from tasks.engine import torchfile
from tasks.engine.errors import UserError

GiB = 1 << 30


def zip_bomb(path, inflated: int = GiB) -> None:
    """A torch archive whose one tensor record is ``inflated`` zero bytes, deflated to ~1/250."""
    plain = path.with_suffix(".plain")
    torch.save({"fc.weight": torch.zeros(4)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                out.writestr(info, src.read(info))
                continue
            record = zipfile.ZipInfo(info.filename)
            record.compress_type = zipfile.ZIP_DEFLATED
            with out.open(record, "w", force_zip64=True) as f:
                chunk = bytes(1 << 20)
                for _ in range(inflated >> 20):
                    f.write(chunk)
    plain.unlink()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.pth"
    zip_bomb(path)
    assert path.stat().st_size < 8 << 20
    return path


def test_an_inflating_checkpoint_is_refused_on_every_path_before_the_allocation(
        bomb, tiny_cls_cfg, tmp_path):
    cfg = tiny_cls_cfg("bombed", TRAIN={"END_EPOCH": 1, "MAX_ITERS_PER_EPOCH": 1})
    resumed = run_folder(cfg)
    resumed.mkdir(parents=True)
    (resumed / "checkpoint_last.pth").symlink_to(bomb)
    before = snapshot(resumed)
    calls = [("tools.eval", ["--cfg", cfg, "--checkpoint", bomb]),
             ("tools.export", ["--cfg", cfg, "--checkpoint", bomb, "--out", tmp_path / "m.onnx"]),
             ("tools.flatness", ["--cfg", cfg, "--checkpoint", bomb, "--out", tmp_path / "flat"]),
             ("tools.train", ["--cfg", cfg, "--resume"]),
             ("tools.train", ["--cfg", cfg, "--overwrite", "--opts", "NAME", "fresh",
                              "MODEL.PRETRAINED", bomb])]
    for code, err in run_tools_limited(calls, headroom=512 << 20):
        ends_in_one_error(code, err, ".pth declares 1.0 GiB of records", "not loaded")
    after = snapshot(resumed)
    after.pop(".lock")  # the run folder's lock, taken by --resume
    assert after == before
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "flat").exists()


def ends_in_one_error(code: int, err: str, *expected: str) -> None:
    """Exit 2, no traceback, and one ``error:`` line, the last (a training run may have
    logged its start first)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    one_error(code, errors[0], *expected)


def test_a_checkpoint_larger_than_the_memory_left_is_refused(tiny_cls_cfg, tmp_path):
    big = tmp_path / "big.pth"
    torch.save({"w": torch.zeros(24 << 20)}, big)  # 96 MiB, stored as torch stores it
    (code, err), = run_tools_limited(
        [("tools.eval", ["--cfg", tiny_cls_cfg(), "--checkpoint", big])], headroom=48 << 20)
    one_error(code, err, "big.pth needs 96.0 MiB of memory to load, more than the", "not loaded")


def test_a_tensor_larger_than_its_record_is_refused(tmp_path):
    honest, forged = tmp_path / "honest.pth", tmp_path / "forged.pth"
    torch.save({"w": torch.zeros(1000)}, honest)
    with zipfile.ZipFile(honest) as src, zipfile.ZipFile(forged, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            out.writestr(info, data[:40] if info.filename.endswith("/data/0") else data)
    with pytest.raises(UserError, match=r"forged.pth: a tensor declares 3.9 KiB but its record holds 40 bytes"):
        torchfile.read(forged, "checkpoint")


def test_legacy_files_load_and_cut_ones_are_refused(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(1000.0)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(torchfile.read(legacy, "weights file")["w"], torch.arange(1000.0))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(legacy.read_bytes()[:1200])
    with pytest.raises(UserError, match=r"cut.pth declares [0-9.]+ KiB of tensors in a file of 1.2 KiB"):
        torchfile.read(cut, "weights file")


@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "empty"])
def test_a_checkpoint_path_that_is_no_regular_file_is_one_line(kind, tiny_cls_cfg, tmp_path, capsys):
    path = tmp_path / f"{kind}.pth"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block the tool for ever
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    else:
        path = "/dev/zero"  # reading it would never end
    expected = {"fifo": "is a FIFO", "folder": "is a folder", "device": "is a character device",
                "empty": "is empty"}[kind]
    one_error(*run_main(tools.eval.main, "--cfg", tiny_cls_cfg(), "--checkpoint", path, capsys=capsys),
              str(path), expected)
