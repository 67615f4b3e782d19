"""cli.run: a UserError is one line on stderr and exit status 2, also from a DataLoader worker."""
import pytest
from torch.utils.data import DataLoader, Dataset

from tasks.engine import cli
from tasks.engine.errors import UserError


class BrokenImages(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise UserError(f"cannot read image data/x/{index}.jpg: not an image; replace or remove it")


@pytest.mark.parametrize("workers", [0, 1])
def test_user_error_is_one_line(workers, capsys):
    def main():
        for _ in DataLoader(BrokenImages(), batch_size=2, num_workers=workers):
            pass

    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: cannot read image data/x/0.jpg: not an image; replace or remove it\n"


def test_other_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        cli.run(lambda: 1 / 0)


@pytest.mark.parametrize("rank,prefix", [(None, ""), ("0", ""), ("2", "[rank 2] ")])
def test_an_error_names_its_rank_under_torchrun(rank, prefix, capsys, monkeypatch):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)

    def main():
        raise UserError("DATASET.ROOT data/x not found")

    with pytest.raises(SystemExit) as exited:
        cli.run(main)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"{prefix}error: DATASET.ROOT data/x not found\n"
