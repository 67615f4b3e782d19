"""pose_hrnet against values recorded from HRNet's own PoseHighResolutionNet (development check
against leoxiaobin/deep-high-resolution-net.pytorch, docs/hrnet.md): the state_dict layout
and parameter count of W32 and W48, the heatmaps of a seeded reference-layout state_dict,
ImageNet backbone files through PRETRAINED_LAYERS, and one-line errors for bad MODEL.EXTRA."""
import hashlib
import logging
from pathlib import Path

import pytest
import torch

from tasks.engine.config import load, make_config
from tasks.engine.errors import UserError
from tasks.pose.hrnet import ExchangeUnit, PoseHRNet, stage_spec
from tasks.pose.task import PoseTask

REPO = Path(__file__).resolve().parents[2]
INPUT_SIZE = (64, 64)  # height, width: small enough for CI; the reference needs multiples of 32
#: HRNet's experiment files' PRETRAINED_LAYERS (everything but the heatmap layer)
BACKBONE_LAYERS = ["conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2", "stage3",
                   "transition3", "stage4"]

# -- recorded from the reference (PoseHighResolutionNet built from HRNet's experiment files) ----
#: tensors per top-level layer (the same for every width)
LAYERS = {"conv1": 1, "bn1": 5, "conv2": 1, "bn2": 5, "layer1": 78, "transition1": 12, "stage2": 108,
          "transition2": 6, "stage3": 744, "transition3": 6, "stage4": 786, "final_layer": 2}
RECORDED_LAYOUT = {  # config -> (state_dict tensors, parameters, digest of the "key [shape]" lines)
    "pose_hrnet_w32_adam.yaml": (1754, 28536113, "33d183da9806e2ce"),
    "pose_hrnet_w48_adam.yaml": (1754, 63595745, "f0e89ca79e714d97"),
}
#: W32 with seeded_state() in eval mode on fixed_input(): heatmaps (2, 17, 16, 16)
RECORDED_W32 = {"sum": 12422.2724609375, "abs_sum": 107621.234375, "max_abs": 34.317081451416016,
                "picks": {(0, 0, 0, 0): -0.8384941220283508, (0, 5, 7, 9): 4.660834789276123,
                          (1, 11, 15, 3): 11.02103328704834, (1, 16, 8, 8): -14.961487770080566}}


def key_table(state: dict) -> list[str]:
    return [f"{k} {list(v.shape)}" for k, v in state.items()]


def digest(table: list[str]) -> str:
    return hashlib.sha256("\n".join(table).encode()).hexdigest()[:16]


def layer_counts(state: dict) -> dict[str, int]:
    """Tensors per top-level layer: where a layout differs when the digest does."""
    counts = {}
    for key in state:
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
    return counts


def seeded_state(state: dict, seed: int = 0) -> dict:
    """A deterministic state_dict of ``state``'s layout whose activations stay bounded
    through the whole network in eval mode (heatmap values of order 10)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, t in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(t)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(t.shape, generator=g)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(t.shape, generator=g)
        elif t.dim() == 4:
            out[key] = torch.randn(t.shape, generator=g) * t[0].numel() ** -0.5
        elif key.endswith("weight"):
            out[key] = 0.5 + 0.5 * torch.rand(t.shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(t.shape, generator=g)
    return out


def fixed_input() -> torch.Tensor:
    return torch.randn(2, 3, *INPUT_SIZE, generator=torch.Generator().manual_seed(1))


def hrnet_cfg(name="pose_hrnet_w32_adam.yaml", opts=()):
    return load(REPO / "configs" / name, ["MODEL.PRETRAINED", "", *opts])


def small_input_opts():
    h, w = INPUT_SIZE
    return ["MODEL.IMAGE_SIZE", f"[{w},{h}]", "MODEL.HEATMAP_SIZE", f"[{w // 4},{h // 4}]"]


@pytest.fixture(scope="module")
def w32_small():
    """HRNet-W32 of configs/pose_hrnet_w32_adam.yaml at the small test input, and its task."""
    task = PoseTask(hrnet_cfg(opts=small_input_opts()))
    return task, task.build_model()


def assert_layout(model, name):
    state = model.state_dict()
    keys, params, layout = RECORDED_LAYOUT[name]
    assert layer_counts(state) == LAYERS
    assert (len(state), sum(p.numel() for p in model.parameters())) == (keys, params)
    assert digest(key_table(state)) == layout


def test_w32_and_w48_have_the_reference_state_dict_layout_and_parameter_count(w32_small):
    assert_layout(w32_small[1], "pose_hrnet_w32_adam.yaml")
    assert_layout(PoseTask(hrnet_cfg("pose_hrnet_w48_adam.yaml")).build_model(), "pose_hrnet_w48_adam.yaml")


def _heatmaps(model):
    with torch.no_grad():
        return model.eval()(fixed_input())


def assert_recorded_heatmaps(y):
    """Within 1e-5 of the reference's heatmaps (relative to their scale)."""
    scale = RECORDED_W32["max_abs"]
    assert tuple(y.shape) == (2, 17, INPUT_SIZE[0] // 4, INPUT_SIZE[1] // 4)
    assert y.abs().max().item() == pytest.approx(scale, rel=1e-5)
    assert y.abs().sum().item() == pytest.approx(RECORDED_W32["abs_sum"], rel=1e-5)
    assert y.sum().item() == pytest.approx(RECORDED_W32["sum"], abs=1e-5 * RECORDED_W32["abs_sum"])
    for index, value in RECORDED_W32["picks"].items():
        assert y[index].item() == pytest.approx(value, abs=1e-5 * scale)


def test_a_reference_layout_state_dict_loads_strictly_and_gives_the_recorded_heatmaps(w32_small, tmp_path):
    task, model = w32_small
    path = tmp_path / "pose_hrnet_w32_seeded.pth"
    torch.save(seeded_state(model.state_dict()), path)
    assert_recorded_heatmaps(_heatmaps(task.load_trained(path)))  # what --checkpoint does: strict



TINY_CFG = REPO / "configs" / "demo" / "pose_hrnet_coco_sample_tiny.yaml"


def tiny_task(*opts) -> PoseTask:
    return PoseTask(load(TINY_CFG, list(opts)))


def classification_layout(model: PoseHRNet) -> dict:
    """A state_dict laid out as HRNet-Image-Classification's (hrnet_w32-36af842e.pth): the pose
    model's tensors without its heatmap layer, the fuse layers the last unit of stage 4 keeps
    for the lower resolutions there, and the classification head (shapes of no concern: the
    head lies outside PRETRAINED_LAYERS)."""
    state = {k: v for k, v in seeded_state(model.state_dict(), seed=5).items() if not k.startswith("final_layer")}
    last = len(model.stage4) - 1
    widths = model.stage4[last].widths
    spec = stage_spec(tiny_task().cfg.MODEL.EXTRA.STAGE4, "STAGE4")
    full = ExchangeUnit(widths, spec, outputs=spec.branches).state_dict()
    state.update({f"stage4.{last}.{k}": v for k, v in full.items() if k.startswith("fuse_layers.") and k[12] != "0"})
    state.update({"incre_modules.0.0.conv1.weight": torch.ones(32, 8, 1, 1), "downsamp_modules.0.0.bias": torch.ones(64),
                  "final_layer.0.weight": torch.ones(128, 64, 1, 1), "classifier.weight": torch.ones(10, 128)})
    return state


def test_an_imagenet_backbone_file_loads_its_pretrained_layers_and_reports_the_rest(tmp_path, caplog):
    file_state = classification_layout(tiny_task().build_model())
    path = tmp_path / "hrnet_tiny_imagenet.pth"
    torch.save(file_state, path)
    task = tiny_task("MODEL.PRETRAINED", str(path), "MODEL.EXTRA.PRETRAINED_LAYERS", str(BACKBONE_LAYERS))
    with caplog.at_level(logging.INFO, logger="bsam.pose"):
        model = task.build_model()
    state = model.state_dict()
    assert all(torch.equal(state[k], file_state[k]) for k in state if not k.startswith("final_layer"))
    head = [k for k in state if k.startswith("final_layer")]
    assert head == ["final_layer.weight", "final_layer.bias"] and not state["final_layer.bias"].any()
    extra_fuse = [k for k in file_state if k.startswith("stage4.1.fuse_layers.") and k not in state]
    assert extra_fuse  # the file has them, the pose model has not
    report = next(r.getMessage() for r in caplog.records if "initialised from" in r.getMessage())
    assert f"loaded {len(state) - 2} tensors" in report
    assert "skipped 4 outside PRETRAINED_LAYERS (classifier, downsamp_modules, final_layer, incre_modules)" in report
    assert (f"skipped {len(extra_fuse)} this model does not have (stage4.1.fuse_layers.1, stage4.1.fuse_layers.2, "
            "stage4.1.fuse_layers.3)") in report
    assert "2 keep their initialisation (final_layer)" in report


def test_a_pose_file_through_model_pretrained_with_all_layers_loads_every_tensor(tmp_path, caplog):
    source = tiny_task().build_model()
    path = tmp_path / "pose_hrnet_tiny.pth"
    torch.save(seeded_state(source.state_dict()), path)
    with caplog.at_level(logging.INFO, logger="bsam.pose"):
        model = tiny_task("MODEL.PRETRAINED", str(path)).build_model()  # PRETRAINED_LAYERS ['*']
    assert f"loaded {len(model.state_dict())} tensors" in caplog.text and "skipped" not in caplog.text
    given = torch.load(path, weights_only=True)
    assert all(torch.equal(v, given[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("opts, expected", [
    (["MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[8,16]"], "MODEL.EXTRA.STAGE3: "),
    (["MODEL.EXTRA.STAGE2.BLOCK", "BASICC"], "MODEL.EXTRA.STAGE2.BLOCK: 'BASICC' is not allowed"),
    (["MODEL.EXTRA.STAGE4.FUSE_METHOD", "CAT"], "MODEL.EXTRA.STAGE4.FUSE_METHOD: 'CAT' is not allowed"),
    (["MODEL.EXTRA.STAGE4.NUM_MODULES", "0"], "MODEL.EXTRA.STAGE4.NUM_MODULES: 0 is not allowed"),
    (["MODEL.EXTRA.STAGE2.NUM_BLOCKS", "[1,0]"], "MODEL.EXTRA.STAGE2.NUM_BLOCKS: [1, 0] is not allowed"),
    (["MODEL.EXTRA.STAGE2.NUM_BLOCK", "[1,1]"], "did you mean MODEL.EXTRA.STAGE2.NUM_BLOCKS"),
    (["MODEL.EXTRA.FINAL_CONV_KERNEL", "5"], "MODEL.EXTRA.FINAL_CONV_KERNEL: 5 is not allowed"),
    (["MODEL.EXTRA.PRETRAINED_LAYERS", "[stage5]"], "MODEL.EXTRA.PRETRAINED_LAYERS: ['stage5'] is not a layer"),
    (["MODEL.HEATMAP_SIZE", "[24,32]"], "do not fit pose_hrnet"),
    (["MODEL.EXTRA.STAGE3", "null"], "MODEL.EXTRA.STAGE3: MODEL.NAME pose_hrnet needs this section"),
])
def test_bad_extra_values_are_one_line_errors_naming_the_key(opts, expected, shared_data, capsys, tmp_path):
    import tools.train
    from tests.reliability_helpers import one_error, run_main

    code, err = run_main(tools.train.main, "--cfg", TINY_CFG, "--opts", "OUTPUT_DIR", tmp_path / "out",
                         "DATASET.ROOT", shared_data / "coco_sample", *opts, capsys=capsys)
    one_error(code, err, expected)


def test_a_backbone_of_another_width_or_network_is_refused(tmp_path):
    wide = tiny_task("MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[16,16]").build_model()
    path = tmp_path / "other.pth"
    torch.save(wide.state_dict(), path)
    with pytest.raises(UserError, match=r"have another shape, e\.g\. transition1\.0\.0\.weight"):
        tiny_task("MODEL.PRETRAINED", str(path)).build_model()
    torch.save({"fc.weight": torch.ones(2, 2)}, path)
    with pytest.raises(UserError, match="holds none of the tensors"):
        tiny_task("MODEL.PRETRAINED", str(path)).build_model()
