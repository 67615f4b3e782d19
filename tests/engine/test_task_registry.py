"""The task registry imports only the task a config names (or a task of one's own, through
CUSTOM_IMPORTS), says which tasks exist, and the Task interface the tools rely on."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from tasks.engine import config, task as task_registry
from tasks.engine.errors import UserError

ONLY_CLASSIFICATION = """
import os, sys
from tasks.engine import config
from tasks.engine.task import get
cfg = config.load("configs/cls_cifar10_bsam.yaml", [])
get(cfg.TASK)(cfg).build_model()
from tasks.classification import transforms  # the module that imports albumentations
print(sorted(m for m in sys.modules if m.split(".")[0] == "pycocotools" or m.startswith(("tasks.pose", "tasks.qat"))))
print(os.environ.get("NO_ALBUMENTATIONS_UPDATE"))
"""


def test_a_classification_run_imports_no_other_task():
    proc = subprocess.run([sys.executable, "-c", ONLY_CLASSIFICATION], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported, no_update = proc.stdout.splitlines()[-2:]
    assert imported == "[]"
    assert no_update == "1"  # albumentations was imported offline


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown TASK 'posse'; known tasks: classification, pose, qat"):
        task_registry.get("posse")


def test_a_broken_task_package_is_not_swallowed(monkeypatch):
    monkeypatch.setitem(task_registry.TASK_MODULES, "ghost", "tasks.no_such_task_package")
    assert "ghost" in task_registry.available()
    with pytest.raises(ModuleNotFoundError, match="tasks.no_such_task_package"):
        task_registry.get("ghost")


@pytest.fixture
def own_registry(monkeypatch, tmp_path):
    """A registry copy and an importable folder: ``write(module, source)`` adds a module."""
    monkeypatch.setattr(task_registry, "_REGISTRY", dict(task_registry._REGISTRY))
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, source: str) -> str:
        (tmp_path / f"{module}.py").write_text(source)
        monkeypatch.delitem(sys.modules, module, raising=False)
        return module

    return write


REGISTERS_TOY = """
from tasks.engine.task import Task, register

@register("{name}")
class Toy(Task):
    pass
"""


def test_custom_imports_register_a_task_and_an_unknown_name_lists_it(own_registry):
    module = own_registry("registers_toy", REGISTERS_TOY.format(name="toy_blobs"))
    cfg = config.make_config({"CUSTOM_IMPORTS": [module], "TASK": "toy_blobs"})
    assert cfg.TASK == "toy_blobs" and cfg.CUSTOM_IMPORTS == [module]
    with pytest.raises(UserError, match="unknown task 'toy_blob' .*did you mean.*toy_blobs"):
        config.make_config({"CUSTOM_IMPORTS": [module], "TASK": "toy_blob"})


@pytest.mark.parametrize("source, expected", [
    (None, "CUSTOM_IMPORTS: cannot import 'no_such_task_module' .*No module named 'no_such_task_module'"),
    ("import no_such_dependency\n", "cannot import 'needs_a_dependency' .*No module named 'no_such_dependency'"),
])
def test_a_custom_import_that_fails_is_an_error_naming_it(own_registry, source, expected):
    module = "no_such_task_module" if source is None else own_registry("needs_a_dependency", source)
    with pytest.raises(UserError, match=expected):
        config.make_config({"CUSTOM_IMPORTS": [module]})


def test_custom_imports_must_be_a_list_of_module_names():
    with pytest.raises(UserError, match="CUSTOM_IMPORTS: 'my_task' is not a list of module names"):
        config.make_config({"CUSTOM_IMPORTS": "my_task"})


def test_a_task_of_ones_own_cannot_take_a_built_in_name(own_registry):
    module = own_registry("takes_pose", REGISTERS_TOY.format(name="pose"))
    with pytest.raises(UserError, match="'pose' is the built-in task of tasks.pose.task; register Toy under another name"):
        config.make_config({"CUSTOM_IMPORTS": [module]})


def test_what_a_task_does_not_offer_is_said(tmp_path):
    task = task_registry.Task(config.make_config())
    with pytest.raises(UserError, match="task Task does not offer export"):
        task.export(None, tmp_path / "model.onnx")
    with pytest.raises(UserError, match=r"task Task does not offer prediction on one picture \(--image\)"):
        task.predict_image(None, tmp_path / "me.jpg", None, tmp_path)


def trained_pair(tmp_path) -> dict:
    """A float and a QAT resnet20 (MODEL.PRETRAINED: a file that is gone) and their saved weights."""
    out = {}
    for name in ("classification", "qat"):
        cfg = config.make_config({"MODEL": {"NAME": "cifar_resnet20", "PRETRAINED": str(tmp_path / "gone.pth")}},
                                 task=name)
        task = task_registry.get(name)(cfg)
        model = task.build_model(pretrained=False)
        torch.nn.init.constant_(model.get_submodule("fc").weight, 0.5)
        torch.save(model.state_dict(), tmp_path / f"{name}.pth")
        out[name] = (task, model, tmp_path / f"{name}.pth")
    return out


def test_a_trained_model_loads_without_its_pretrained_file_and_of_its_own_kind_only(tmp_path):
    """MODEL.PRETRAINED is where training started; evaluation and export need only the
    checkpoint, so a file no longer there (or another machine's path) is not read."""
    pair = trained_pair(tmp_path)
    for task, trained, path in pair.values():
        loaded = task.load_trained(path)
        assert loaded.state_dict().keys() == trained.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
        with pytest.raises(UserError, match="gone.pth"):
            task.build_model()  # training does read it
    (float_task, _, float_path), (qat_task, _, qat_path) = pair["classification"], pair["qat"]
    with pytest.raises(UserError, match="qat.pth is a QAT checkpoint: use the qat config"):
        float_task.load_trained(qat_path)
    with pytest.raises(UserError, match="classification.pth has no quantizer step sizes: it is a float model"):
        qat_task.load_trained(float_path)
