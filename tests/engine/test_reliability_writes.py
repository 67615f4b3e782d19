"""Every write of the io layer (checkpoints, results, pictures) fails as one UserError naming
the file, and leaves an earlier file of that name as it was."""
import pytest
import torch
from matplotlib.figure import Figure

from tasks.engine import io
from tasks.engine.errors import UserError

WRITES = {"json": lambda path: io.save_json({"a": 1}, path),
          "torch": lambda path: io.save_torch({"w": torch.ones(2)}, path),
          "figure": lambda path: io.save_figure(Figure(), path)}


@pytest.mark.parametrize("kind", sorted(WRITES))
def test_a_path_under_a_regular_file_or_at_a_folder_is_one_error(kind, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserError, match=r"cannot write .*a_file/out\.png"):
        WRITES[kind](a_file / "out.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(UserError, match=r"cannot write .*folder\.png"):
        WRITES[kind](tmp_path / "folder.png")
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder.png"]


def test_a_library_that_fails_otherwise_keeps_the_earlier_file(tmp_path):
    path = tmp_path / "curves.xyz"
    path.write_bytes(b"earlier")
    with pytest.raises(UserError, match=r"cannot write .*curves\.xyz: .*left as it was"):
        io.save_figure(Figure(), path)  # matplotlib: ValueError, format 'xyz' is not supported
    assert path.read_bytes() == b"earlier" and [p.name for p in tmp_path.iterdir()] == ["curves.xyz"]
