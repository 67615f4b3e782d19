"""Config loading: defaults, overrides and one-line errors for every kind of mistake."""
import pytest

from tasks.engine import config


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_overrides_and_name(tmp_path):
    path = write(tmp_path, "TASK: classification\nTRAIN: {LR: 1, LR_STEP: [3, 4]}\n")
    cfg = config.load(path, ["SAM.METHOD", "bsam", "SAM.RHO", "0.1", "TRAIN.LR_STEP", "[5,6]"])
    assert cfg.TRAIN.LR == 1.0 and isinstance(cfg.TRAIN.LR, float)
    assert cfg.SAM.METHOD == "bsam" and cfg.SAM.RHO == 0.1
    assert cfg.TRAIN.LR_STEP == [5, 6]
    assert cfg.NAME == "exp" and cfg.TRAIN.MOMENTUM == 0.9  # a default
    assert cfg["TRAIN"]["LR"] is cfg.TRAIN.LR


def test_saved_config_loads_back_identically(tmp_path):
    cfg = config.load(write(tmp_path, "TASK: classification\nSAM: {METHOD: sam}\n"))
    saved = config.save(cfg, tmp_path / "run" / "config.yaml")
    assert config.load(saved).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("text,opts,expected", [
    ("TRAIN: {LRR: 0.1}\n", [], "TRAIN.LRR: unknown key (did you mean TRAIN.LR?)"),
    ("TRIAN: {LR: 0.1}\n", [], "TRIAN: unknown key (did you mean TRAIN?)"),
    ("TRAIN: {LR: fast}\n", [], "TRAIN.LR: expected a number, got 'fast'"),
    ("TRAIN: {END_EPOCH: 2.5}\n", [], "TRAIN.END_EPOCH: expected an integer, got 2.5"),
    ("SAM: {METHOD: bsma}\n", [], "SAM.METHOD: 'bsma' is not allowed; choose one of none, sam, asam, bsam (did you mean bsam?)"),
    ("SAM: {RHO: -1}\n", [], "SAM.RHO: -1.0 is not allowed; expected a number >= 0"),
    ("TRAIN: 3\n", [], "TRAIN: expected a section"),
    ("x: !!python/object/apply:os.system ['echo hacked']\n", [], "unsafe or unknown YAML tag refused"),
    ("TRAIN: [\n", [], "invalid YAML at line 2"),
    ("TASK: posee\n", [], "TASK: unknown task 'posee' (did you mean pose?)"),
    ("", ["TRAIN.MOMENTUMM", "0.5"], "--opts: TRAIN.MOMENTUMM: unknown key (did you mean TRAIN.MOMENTUM?)"),
    ("", ["TRAIN.LR"], "--opts: expected KEY VALUE pairs"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, opts, expected):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path, opts)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    if not message.startswith("--opts"):
        assert message.startswith(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(config.ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")


def test_resolve_path_prefers_cwd_then_config_folder(tmp_path, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "data").mkdir()
    cfg = config.load(write(tmp_path / "cfgs", "TASK: classification\n"))
    monkeypatch.chdir(tmp_path)
    assert cfg.resolve_path("data") == tmp_path / "cfgs" / "data"
    (tmp_path / "data").mkdir()
    assert cfg.resolve_path("data").resolve() == tmp_path / "data"
