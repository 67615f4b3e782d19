"""The YAML loader's limits (memory bounded, measured with tracemalloc) and the value checks."""
import tracemalloc

import pytest

import tools.train
from reliability_helpers import one_error, run_main
from tasks.engine import task as task_registry
from tasks.engine.config import ConfigError, load, make_config
from tasks.engine.schema import Key, records

MEMORY_LIMIT = 20 * 2**20  # bytes of Python allocations any of these files may cost


def peak_memory_of(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def alias_bomb() -> str:
    lines = ["TASK: pose", "MODEL:", "  EXTRA:", '    STAGE2: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    STAGE{3 if i == 8 else 4}_{i}: &a{i} [*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1}]"
              for i in range(1, 9)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, text, expected", [
    ("bomb", alias_bomb(), "aliases (*name) are not supported"),
    ("deep", "TRAIN:\n  LR_STEP: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32 levels"),
    ("huge", "TRAIN:\n  LR_STEP: [" + "1, " * 2_000_000 + "1]\n", "too large for a config"),
    ("twice", "TRAIN:\n  LR: 0.05\n  BATCH_SIZE_PER_GPU: 16\nTRAIN:\n  LR: 0.1\n", "duplicate key 'TRAIN'"),
    ("twice_inner", "TRAIN:\n  LR: 0.05\n  LR: 0.1\n", "duplicate key 'LR'"),
])
def test_hostile_yaml_is_refused_within_a_memory_limit(name, text, expected, tmp_path):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)

    def refused():
        with pytest.raises(ConfigError) as err:
            load(path)
        message = str(err.value)
        assert expected in message and str(path) in message and "\n" not in message, message

    assert peak_memory_of(refused) < MEMORY_LIMIT


def test_a_hostile_config_through_the_tool_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("TRAIN:\n  LR_STEP: " + "[" * 5000 + "]" * 5000 + "\n")
    one_error(*run_main(tools.train.main, "--cfg", path, capsys=capsys), "deep.yaml", "nested deeper")


def test_exponent_numbers_read_as_numbers_in_yaml_and_opts(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("TRAIN:\n  LR: 1e-3\n  WD: 5E-4\n  LR_END: 1e6\n")
    cfg = load(path, ["SAM.RHO", "2e-2", "SAM.RHO_MIN_END", "1e-5"])
    assert (cfg.TRAIN.LR, cfg.TRAIN.WD, cfg.TRAIN.LR_END) == (1e-3, 5e-4, 1e6)
    assert (cfg.SAM.RHO, cfg.SAM.RHO_MIN_END) == (0.02, 1e-5)
    assert load(path, ["NAME", "1e3_run"]).NAME == "1e3_run"  # not a number: stays a name


@pytest.mark.parametrize("key, value, expected", [
    ("TRAIN.EVAL_EVERY", "0", "an integer >= 1"),
    ("PRINT_FREQ", "0", "an integer >= 1"),
    ("TRAIN.MAX_ITERS_PER_EPOCH", "-1", "an integer >= 0"),
    ("TRAIN.LR_FACTOR", "-1", "a number > 0"),
    ("TRAIN.MAX_NONFINITE_STEPS", "0", "an integer >= 1"),
    ("SAM.RHO_MIN_END", "abc", "expected a number (or null)"),
    ("GPUS", "{a: 1}", "expected a list or a string or an integer (or null)"),
])
def test_loose_values_are_refused(key, value, expected):
    with pytest.raises(ConfigError) as err:
        make_config(opts=[key, value])
    assert key in str(err.value) and expected in str(err.value)


def test_pose_null_defaults_have_declared_types():
    with pytest.raises(ConfigError, match="MODEL.EXTRA.SIGMA: expected a number"):
        make_config(task="pose", opts=["MODEL.EXTRA.SIGMA", "wide"])
    assert make_config(task="pose", opts=["MODEL.EXTRA.SIGMA", "3"]).MODEL.EXTRA.SIGMA == 3.0


def test_a_key_with_a_null_default_declares_its_type():
    with pytest.raises(TypeError, match="needs its type"):
        Key(None)
    with pytest.raises(TypeError, match="item type"):
        Key([], type=list)


@pytest.mark.parametrize("name", task_registry.available())
def test_every_default_is_a_value_its_own_record_allows(name):
    for dotted, spec in records(task_registry.get(name).config_schema()):
        assert spec.coerce(spec.default, dotted) == spec.default, dotted
        spec.validate(spec.default, dotted)
