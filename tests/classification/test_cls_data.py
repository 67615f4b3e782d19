"""Classification data: ImageFolder and CIFAR reading, transforms, label noise, clear errors."""
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tasks.classification.data import build_image_datasets, symmetric_label_noise
from tasks.classification.image_folder import ImageFolder
from tasks.classification.transforms import CIFAR10_MEAN, CIFAR10_STD, build_transforms
from tasks.engine.config import make_config
from tasks.engine.errors import UserError


def cls_config(root, **sections):
    data = {"DATASET": {"ROOT": str(root)}, "MODEL": {"NAME": "cifar_resnet20"}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return make_config(data, task="classification")


def write_image_folder(root: Path, classes=("cat", "dog"), per_class=3, size=16, splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = np.full((size, size, 3), 40 * c, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{i}.png"), image)
    return root


def write_fake_cifar(root: Path, fmt: str = "cifar10", n_train_per_file=4, n_test=6):
    """A miniature of torchvision's extracted CIFAR format (same keys, file names, dtypes)."""
    rng = np.random.default_rng(1)
    if fmt == "cifar10":
        folder, files, label_key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
        k, meta, names_key = 10, "batches.meta", "label_names"
    else:
        folder, files, label_key = root / "cifar-100-python", ["train"], "fine_labels"
        k, meta, names_key = 100, "meta", "fine_label_names"
    folder.mkdir(parents=True)

    def dump(name, n):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: rng.integers(0, k, n).tolist()}
        # the real files were written by numpy 1.x, which names numpy.core (not numpy._core)
        data = pickle.dumps(entry, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(data)
        return entry

    train = [dump(name, n_train_per_file) for name in files]
    test = dump("test_batch" if fmt == "cifar10" else "test", n_test)
    with open(folder / meta, "wb") as f:
        pickle.dump({names_key: [f"class{i}" for i in range(k)]}, f, protocol=2)
    return train, test


# -- image folders ------------------------------------------------------------------------------
def test_image_folder_reads_classes_in_sorted_order(tmp_path):
    write_image_folder(tmp_path, classes=("zebra", "ant"), per_class=2)
    ds = ImageFolder(tmp_path / "train")
    assert ds.classes == ["ant", "zebra"] and ds.targets == [0, 0, 1, 1]
    image, label = ds[0]
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and label == 0


def test_a_corrupt_image_is_a_user_error_naming_the_file(tmp_path):
    write_image_folder(tmp_path, per_class=2)
    bad = tmp_path / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG at all" * 20)
    train, _ = build_image_datasets(cls_config(tmp_path, MODEL={"NUM_CLASSES": 2}))
    index = [str(p) for p in train.paths].index(str(bad))
    with pytest.raises(UserError, match=r"cannot decode image .*broken\.jpg"):
        train[index]
    assert train[0][0].shape == (3, 32, 32)  # the good files still load


def test_num_classes_must_match_the_folders(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b", "c"))
    with pytest.raises(UserError, match="MODEL.NUM_CLASSES is 10 .* has 3 classes; set MODEL.NUM_CLASSES: 3"):
        build_image_datasets(cls_config(tmp_path))


def test_test_split_with_an_unknown_class_is_refused(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"))
    write_image_folder(tmp_path, classes=("c",), splits=("test",))
    with pytest.raises(UserError, match="class folders that the training split lacks: c"):
        build_image_datasets(cls_config(tmp_path, MODEL={"NUM_CLASSES": 2}))


def test_missing_split_or_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_image_datasets(cls_config(tmp_path / "nowhere", DATASET={"FORMAT": "imagefolder"}))
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        ImageFolder(tmp_path / "train")


# -- CIFAR ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, k", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_on_disk_format_is_detected_and_read(tmp_path, fmt, k):
    train_entries, test_entry = write_fake_cifar(tmp_path, fmt)
    train, test = build_image_datasets(cls_config(tmp_path, MODEL={"NUM_CLASSES": k}, DATASET={"AUGMENT": "none"}))
    expected_labels = [label for e in train_entries for label in e["labels" if fmt == "cifar10" else "fine_labels"]]
    assert train.targets == expected_labels and len(test) == 6
    assert train.classes[:2] == ["class0", "class1"] and len(train.classes) == k
    # pixel layout: CIFAR rows are 1024 R, 1024 G, 1024 B values of a row-major 32x32 image
    raw = train_entries[0]["data"][1]
    image = train.images[1]
    assert image[0, 0, 0] == raw[0] and image[0, 0, 1] == raw[1024] and image[31, 31, 2] == raw[3071]
    assert image[0, 1, 0] == raw[1] and image[1, 0, 0] == raw[32]


def test_cifar_root_may_be_the_extracted_folder_itself(tmp_path):
    write_fake_cifar(tmp_path)
    train, _ = build_image_datasets(cls_config(tmp_path / "cifar-10-batches-py"))
    assert len(train) == 20


def test_missing_cifar_says_where_to_put_the_archive(tmp_path):
    with pytest.raises(UserError) as err:
        build_image_datasets(cls_config(tmp_path, DATASET={"FORMAT": "cifar10"}))
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and str(tmp_path) in message and "data_batch_1" in message


def test_cifar_pickles_cannot_run_code(tmp_path, monkeypatch):
    write_fake_cifar(tmp_path)
    monkeypatch.chdir(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f, protocol=2)
    with pytest.raises(UserError, match="data_batch_1"):
        build_image_datasets(cls_config(tmp_path))
    assert not (tmp_path / "PWNED").exists()


# -- label noise ---------------------------------------------------------------------------------
def test_symmetric_noise_flips_exactly_the_rate_to_other_classes():
    targets = np.arange(1000) % 10
    noisy, flipped = symmetric_label_noise(targets, 10, 0.3, seed=5)
    noisy = np.asarray(noisy)
    assert len(flipped) == 300 and (noisy != targets).sum() == 300
    assert set(np.flatnonzero(noisy != targets)) == set(flipped.tolist())
    # the new labels spread over the other classes (not stuck on one)
    assert len(set(noisy[flipped].tolist())) == 10
    again, _ = symmetric_label_noise(targets, 10, 0.3, seed=5)
    other, _ = symmetric_label_noise(targets, 10, 0.3, seed=6)
    assert again == noisy.tolist() and other != noisy.tolist()
    assert symmetric_label_noise(targets, 10, 0.0, seed=5)[0] == targets.tolist()


def test_label_noise_touches_training_labels_only(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b", "c", "d"), per_class=5)
    clean_train, clean_test = build_image_datasets(cls_config(tmp_path, MODEL={"NUM_CLASSES": 4}))
    noisy_train, noisy_test = build_image_datasets(
        cls_config(tmp_path, MODEL={"NUM_CLASSES": 4}, DATASET={"LABEL_NOISE": 0.4, "LABEL_NOISE_SEED": 3})
    )
    assert sum(a != b for a, b in zip(clean_train.targets, noisy_train.targets)) == 8
    assert noisy_test.targets == clean_test.targets


def test_label_noise_rate_is_checked_by_the_config():
    with pytest.raises(UserError, match="DATASET.LABEL_NOISE"):
        make_config({"DATASET": {"LABEL_NOISE": 1.0}}, task="classification")


# -- transforms ---------------------------------------------------------------------------------
def test_cifar_test_transform_normalises_with_cifar_statistics():
    _, test_tf = build_transforms("cifar", 32, CIFAR10_MEAN, CIFAR10_STD)
    mean_image = np.tile((np.array(CIFAR10_MEAN) * 255).round().astype(np.uint8), (32, 32, 1))
    out = test_tf(mean_image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.abs().max() < 0.01


def test_cifar_train_transform_pads_crops_and_cuts_out():
    train_tf, _ = build_transforms("cifar", 32, (0.5,) * 3, (0.25,) * 3, cutout=16)
    image = np.full((32, 32, 3), 255, np.uint8)
    outs = [train_tf(image) for _ in range(40)]
    # zero padding shows up as -2 (=(0-0.5)/0.25) borders; cutout as 0 (the mean)
    assert any((o == -2).any() for o in outs)
    assert any((o == 0).all(0).sum() >= 16 * 8 for o in outs)
    assert all(o.shape == (3, 32, 32) for o in outs)


def test_transfer_transforms_give_the_image_size():
    train_tf, test_tf = build_transforms("transfer", 24, (0.5,) * 3, (0.5,) * 3)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert train_tf(image).shape == (3, 24, 24) and test_tf(image).shape == (3, 24, 24)
    assert torch.equal(test_tf(image), test_tf(image))  # evaluation is deterministic


def test_augmentation_follows_the_torch_seed():
    train_tf, _ = build_transforms("transfer", 16, (0.5,) * 3, (0.5,) * 3)
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)

    def draw(seed):
        torch.manual_seed(seed)
        return torch.stack([train_tf(image) for _ in range(3)])

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


# -- real data -----------------------------------------------------------------------------------
def test_real_cifar10_subset(shared_data):
    train, test = build_image_datasets(cls_config(shared_data / "cifar10_subset"))
    assert len(train) == 5000 and len(test) == 1000
    assert train.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(test.targets).tolist() == [100] * 10
    image, label = test[0]
    assert image.shape == (3, 32, 32) and label == 0
