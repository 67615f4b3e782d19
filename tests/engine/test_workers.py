"""Loader workers above the machine's cores are capped with one line of our own, not torch's
per-epoch warning."""
import logging
import warnings

import torch

from tasks.engine import data


def test_workers_above_cores_are_capped_with_one_line(monkeypatch, caplog):
    monkeypatch.setattr(data, "available_cores", lambda: 2)
    monkeypatch.setattr(data, "_capped", set())
    dataset = torch.utils.data.TensorDataset(torch.arange(4.0))
    with caplog.at_level(logging.WARNING, logger="bsam.data"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders = [data.make_loader(dataset, 2, 4, None) for _ in range(2)]  # train + val
    assert [loader.num_workers for loader in loaders] == [2, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["WORKERS 4: this machine has 2 CPU cores for this process, so the data loaders use 2 workers"]
    assert not [w for w in caught if "worker" in str(w.message)]


def test_workers_within_cores_are_kept(monkeypatch, caplog):
    monkeypatch.setattr(data, "available_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="bsam.data"):
        assert data.usable_workers(0) == 0
        assert data.usable_workers(2) == 2
    assert not caplog.records
