"""tasks.engine.weights: offline weight lookup, safe loading, head-aware partial loading."""
import pickle

import pytest
import torch
from torch import nn

from tasks.engine.errors import UserError
from tasks.engine.weights import load_lenient, read_pretrained, read_state_dict


class Net(nn.Module):
    """A backbone + ``fc`` head, like the classifiers."""

    def __init__(self, num_classes=10, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)


def test_reads_plain_state_dicts_checkpoints_and_ddp_prefixes(tmp_path):
    sd = Net().state_dict()
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"model": sd, "epoch": 3, "optimizer": {"state": {}}}, tmp_path / "ckpt.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    for name in ("plain.pth", "ckpt.pth", "ddp.pth"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == sd.keys()
        assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_bad_files_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="not found.*missing.pth"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save(Net().state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated.pth"):
        read_state_dict(tmp_path / "truncated.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(UserError, match="garbage.pth"):
        read_state_dict(tmp_path / "garbage.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserError, match="no state_dict"):
        read_state_dict(tmp_path / "list.pth")


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_files_that_would_run_code_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": {"w": _Evil()}}, f, protocol=2)
    with pytest.raises(UserError, match="evil.pth"):
        read_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED").exists()


def test_torchvision_weight_names_come_from_the_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as err:
        read_pretrained("ResNet18_Weights.IMAGENET1K_V1")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    sd = Net().state_dict()
    torch.save(sd, cache / "resnet18-f37072fd.pth")
    loaded = read_pretrained("ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(loaded["conv.weight"], sd["conv.weight"])


def test_misspelt_weight_names_get_a_suggestion():
    with pytest.raises(UserError, match="did you mean 'ResNet18_Weights.IMAGENET1K_V1'"):
        read_pretrained("ResNet18_Weights.IMAGENET1K_V2")


def test_local_paths_are_files(tmp_path):
    torch.save({"model": Net().state_dict()}, tmp_path / "w.pth")
    assert "fc.weight" in read_pretrained(str(tmp_path / "w.pth"))


def test_load_lenient_skips_a_resized_head_and_copies_the_rest():
    source, target = Net(num_classes=10), Net(num_classes=5)
    with torch.no_grad():
        source.conv.weight.add_(1.0)
        source.bn.running_mean.fill_(0.5)
    head_before = target.fc.weight.clone()
    skipped = load_lenient(target, source.state_dict(), skip_prefixes=("fc.",))
    assert skipped == ["fc.bias", "fc.weight"]
    assert torch.equal(target.conv.weight, source.conv.weight)
    assert torch.equal(target.bn.running_mean, source.bn.running_mean)
    assert torch.equal(target.fc.weight, head_before)


def test_load_lenient_keeps_a_head_of_the_same_shape():
    source, target = Net(num_classes=5), Net(num_classes=5)
    assert load_lenient(target, source.state_dict()) == []
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_head_keys_absent_on_either_side_are_skipped():
    sd = {k: v for k, v in Net().state_dict().items() if not k.startswith("fc.")}
    assert load_lenient(Net(), sd) == ["fc.bias", "fc.weight"]  # file without a head
    backbone = nn.Module()
    backbone.conv, backbone.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    assert load_lenient(backbone, Net().state_dict(), skip_prefixes=("fc.",)) == ["fc.bias", "fc.weight"]


def test_other_differences_are_user_errors_listing_keys():
    with pytest.raises(UserError, match=r"another shape: conv.weight \(file \[8, 3, 3, 3\] vs model \[4, 3, 3, 3\]\)"):
        load_lenient(Net(width=4), {**Net(width=8).state_dict()}, skip_prefixes=())
    sd = Net().state_dict()
    del sd["conv.weight"]
    with pytest.raises(UserError, match="1 missing: conv.weight"):
        load_lenient(Net(), sd)
    sd = {**Net().state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(UserError, match="1 unexpected: extra.weight"):
        load_lenient(Net(), sd)


def test_old_files_without_bn_counters_load():
    sd = {k: v for k, v in Net().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert load_lenient(Net(), sd) == []
