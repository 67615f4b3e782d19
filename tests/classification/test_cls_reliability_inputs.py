"""Image files and CIFAR pickles that used to crash (without a name) or end in a traceback."""
import os
import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest

import tools.train
from reliability_helpers import one_error, run_folder, run_main
from tasks.classification.cifar import read_cifar
from tasks.classification.image_folder import ImageFolder
from tasks.engine.errors import UserError
from tasks.engine.imagefile import MAX_PIXELS, check_image_file, read_bgr


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose PNG header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    folder = tmp_path / "train" / "cats"
    folder.mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9_\xff.png")  # Latin-1 bytes: not valid UTF-8
    image = np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    (folder / name).write_bytes(encoded.tobytes())
    dataset = ImageFolder(tmp_path / "train")
    assert np.array_equal(dataset.image(0), image[..., ::-1])  # RGB of the BGR written
    (folder / name).write_bytes(b"broken")
    with pytest.raises(UserError) as err:
        dataset.image(0)
    message = str(err.value)
    assert "caf\\xe9_\\xff.png" in message or "caf\\udce9_\\udcff.png" in message
    message.encode("utf-8")  # printable on any terminal


def test_an_absurd_header_is_refused_by_name_before_decoding(tmp_path):
    for width, height in ((60000, 60000), (20000, 10000)):
        path = tmp_path / f"huge_{width}.png"
        path.write_bytes(png_claiming(width, height))
        for read in (read_bgr, check_image_file):
            with pytest.raises(UserError) as err:
                read(path)
            assert path.name in str(err.value) and str(MAX_PIXELS) in str(err.value)


def test_float_tiffs_are_read_or_refused_clearly(tmp_path):
    pixels = np.random.default_rng(1).random((10, 12, 3)).astype(np.float32)
    path = tmp_path / "unit.tiff"
    assert cv2.imwrite(str(path), pixels)
    assert np.array_equal(read_bgr(path), (pixels * 255).round().astype(np.uint8))
    check_image_file(path)
    gray = tmp_path / "gray.tiff"
    assert cv2.imwrite(str(gray), pixels[..., 0] * 0.5)
    assert read_bgr(gray).shape == (10, 12, 3)
    wide = tmp_path / "wide.tiff"
    assert cv2.imwrite(str(wide), pixels * 1000)
    with pytest.raises(UserError) as err:
        read_bgr(wide)
    assert "wide.tiff" in str(err.value) and "only [0, 1]" in str(err.value)
    assert "corrupt" not in str(err.value)


def test_a_corrupt_test_image_stops_the_run_before_training(tiny_image_folder, tiny_cls_cfg, tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("red", "blue"):
            (root / split / cls).mkdir(parents=True)
            for source in sorted((tiny_image_folder / split / cls).iterdir())[:4]:
                (root / split / cls / source.name).write_bytes(source.read_bytes())
    (root / "test" / "blue" / "zz_broken.png").write_bytes(b"\x89PNG not really")
    cfg = tiny_cls_cfg("broken_test", DATASET={"ROOT": str(root)})
    one_error(*run_main(tools.train.main, "--cfg", cfg, capsys=capsys), "zz_broken.png")
    assert not (run_folder(cfg) / "checkpoint_last.pth").exists()


def write_cifar(folder, rows: int = 4, data=None, labels=None, drop_labels=False):
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"data": np.zeros((rows, 3072), np.uint8) if data is None else data,
             "labels": list(range(rows)) if labels is None else labels}
    if drop_labels:
        del entry["labels"]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


@pytest.mark.parametrize("broken, expected", [
    (dict(data=np.zeros((4, 3071), np.uint8)), "'data' must be uint8 rows of 3072 pixels (N x 3072), got uint8 [4, 3071]"),
    (dict(drop_labels=True), "holds no 'labels' entry"),
    (dict(labels=[0, 1, 57, 2]), "labels[2] is 57, not a class index in [0, 10)"),
    (dict(labels=[0, 1]), "'labels' must list one label per image (4), got 2"),
])
def test_malformed_cifar_pickles_are_one_line(broken, expected, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, **broken)
    with pytest.raises(UserError) as err:
        read_cifar(tmp_path, "cifar10", train=True)
    assert "data_batch_1" in str(err.value) and expected in str(err.value), str(err.value)


def test_a_well_formed_cifar_folder_still_loads(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    images, labels, classes = read_cifar(tmp_path, "cifar10", train=False)
    assert images.shape == (4, 32, 32, 3) and labels == [0, 1, 2, 3] and len(classes) == 10
