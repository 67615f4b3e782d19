"""The shipped QAT configs load, say in their name what they hold, and twins differ only in SAM."""
import re
from pathlib import Path

import pytest
import yaml

from tasks.engine.config import load

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QAT_CONFIGS = sorted(CONFIGS.glob("qat_*.yaml"))
NAME = re.compile(r"qat_(resnet\d+)_(cifar\d+)_w(\d)a(\d)_(bsam|sam|sgd)\.yaml")


def test_every_bit_width_and_method_is_shipped():
    names = {p.name for p in QAT_CONFIGS}
    for bits in (4, 3, 2):
        for method in ("bsam", "sam", "sgd"):
            assert f"qat_resnet20_cifar10_w{bits}a{bits}_{method}.yaml" in names
    for method in ("bsam", "sam", "sgd"):
        assert f"qat_resnet18_cifar100_w4a4_{method}.yaml" in names


@pytest.mark.parametrize("path", QAT_CONFIGS + sorted((CONFIGS / "demo").glob("qat_*.yaml")), ids=lambda p: p.name)
def test_config_loads_and_matches_its_name(path):
    cfg = load(path)
    assert cfg.TASK == "qat"
    match = NAME.fullmatch(path.name)
    if match:
        model, dataset, w, a, method = match.groups()
        assert cfg.MODEL.NAME == f"cifar_{model}"
        assert cfg.MODEL.NUM_CLASSES == {"cifar10": 10, "cifar100": 100}[dataset]
        assert (cfg.QUANT.W_BITS, cfg.QUANT.A_BITS) == (int(w), int(a))
        assert cfg.SAM.METHOD == {"sgd": "none"}.get(method, method)


@pytest.mark.parametrize("path", [p for p in QAT_CONFIGS if p.name.endswith("_bsam.yaml")], ids=lambda p: p.name)
def test_twins_differ_only_in_the_optimizer(path):
    def body(p):
        data = yaml.safe_load(p.read_text())
        data.pop("SAM")
        return data

    for twin in ("sam", "sgd"):
        assert body(path) == body(path.with_name(path.name.replace("_bsam", f"_{twin}")))
