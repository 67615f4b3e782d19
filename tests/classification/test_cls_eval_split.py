"""Evaluation reads the test split alone: a folder with only test/ evaluates, with the class
indices training gave (sorted names), and a test split missing a class takes the names from
train/ without reading its images."""
import shutil

import pytest

from tasks.engine.config import make_config
from tasks.engine.errors import UserError
from tasks.classification.task import ClassificationTask


def task_for(root, num_classes=2):
    cfg = make_config({"DATASET": {"ROOT": str(root), "TRAIN_SET": "train", "TEST_SET": "test",
                                   "IMAGE_SIZE": 16},
                       "MODEL": {"NAME": "cifar_resnet20", "NUM_CLASSES": num_classes}},
                      task="classification")
    return ClassificationTask(cfg)


def test_a_folder_with_only_the_test_split_evaluates(tiny_image_folder, tmp_path):
    shutil.copytree(tiny_image_folder / "test", tmp_path / "test")
    test = task_for(tmp_path).build_eval_dataset()
    _, reference = task_for(tiny_image_folder).build_datasets()
    assert test.classes == reference.classes == ["blue", "red"]
    assert test.targets == reference.targets and len(test) == 16


def test_a_test_split_missing_a_class_takes_the_names_of_the_train_folders(tiny_image_folder, tmp_path):
    shutil.copytree(tiny_image_folder / "test" / "red", tmp_path / "test" / "red")
    (tmp_path / "train" / "blue").mkdir(parents=True)  # names only: no images needed
    (tmp_path / "train" / "red").mkdir()
    test = task_for(tmp_path).build_eval_dataset()
    assert test.classes == ["blue", "red"] and set(test.targets) == {1}
    shutil.rmtree(tmp_path / "train")
    with pytest.raises(UserError, match="1 class folders but MODEL.NUM_CLASSES is 2"):
        task_for(tmp_path).build_eval_dataset()


def test_a_test_split_of_other_class_names_is_refused_as_training_refuses_it(tiny_image_folder, tmp_path):
    """Two test folders named unlike the training split's would otherwise be scored as the
    model's classes 0 and 1 under the wrong names."""
    shutil.copytree(tiny_image_folder / "train", tmp_path / "train")
    shutil.copytree(tiny_image_folder / "test" / "red", tmp_path / "test" / "car")
    shutil.copytree(tiny_image_folder / "test" / "blue", tmp_path / "test" / "plane")
    for build in (lambda t: t.build_eval_dataset(), lambda t: t.build_datasets()):
        with pytest.raises(UserError, match="class folders that the training split lacks: car, plane"):
            build(task_for(tmp_path))
