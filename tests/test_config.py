"""ModelConfig and FinetuneConfig: validation, the JSON round trip, keys of removed experiments, presets."""
import json
import math

import pytest

from animate_cli.config import (N_SELECTION_FEATURES, PRESETS, REMOVED_EXPERIMENTS, FinetuneConfig, ModelConfig,
                                preset)
from animate_cli.errors import AnimateError
from animate_cli.face.draw import DRAWING_VERSION
from animate_cli.references import SELECTION_FEATURES
from animate_cli.warp import DEFAULT_REG

TINY = preset("tiny")


def test_defaults_follow_their_sources():
    cfg = ModelConfig()
    assert cfg.warp_reg == DEFAULT_REG  # the `warp` model's spline unless a model fits its own
    assert cfg.drawing_version == DRAWING_VERSION
    assert cfg.selection == () and cfg.generator == "warp"
    assert N_SELECTION_FEATURES == len(SELECTION_FEATURES)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("generator", ["fsth", "warp"])
def test_presets_round_trip_through_json(name, generator):
    cfg = preset(name, generator)
    assert cfg.preset == name and cfg.generator == generator
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_preset_sizes():
    small = preset("small")
    assert small.resolution == 256 and small.trunk_resolution == 128  # the space-to-depth stem
    assert small.embed_channels()[-1] == small.embed_dim and len(small.embed_channels()) == small.n_embed_down
    assert [small.channels(i) for i in range(5)] == [16, 32, 64, 128, 128]
    assert preset("paper").trunk_resolution == 256
    with pytest.raises(AnimateError, match="unknown model preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize("change,message", [
    ({"generator": "gan"}, "unknown generator"),
    ({"resolution": 100}, "power of two"),
    ({"resolution": 8}, "power of two"),
    ({"base_channels": 0}, "positive"),
    ({"g_down": 9}, "does not fit"),
    ({"g_down": 0}, "does not fit"),
    ({"g_res_blocks": -1}, "g_res_blocks"),
    ({"selection": (1.0, 2.0)}, f"needs {N_SELECTION_FEATURES} weights"),
    ({"selection": [0.0] * N_SELECTION_FEATURES}, "tuple"),
    ({"selection": (math.nan,) * N_SELECTION_FEATURES}, "finite"),
    ({"selection": (True,) * N_SELECTION_FEATURES}, "finite numbers"),
    ({"generator": "fsth", "selection": (0.0,) * N_SELECTION_FEATURES}, "only the warp generator"),
    ({"warp_reg": 0.0}, "warp_reg"),
    ({"warp_reg": 2.0}, "warp_reg"),
    ({"warp_reg": math.inf}, "warp_reg"),
    ({"mouth_shots": 1}, "mouth_shots must be true or false"),
    ({"generator": "fsth", "mouth_shots": True}, "only the warp generator takes mouths"),
    ({"format_version": 99}, "format version 99"),
])
def test_invalid_configs_are_refused_in_one_line(change, message):
    with pytest.raises(AnimateError, match=message) as info:
        TINY.replace(**change)
    assert "\n" not in str(info.value)


def test_from_dict_checks_keys_and_types_and_fills_defaults():
    data = TINY.to_dict()
    with pytest.raises(AnimateError, match="must be a JSON object"):
        ModelConfig.from_dict([1, 2])
    with pytest.raises(AnimateError, match="unknown model config key.*bogus"):
        ModelConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(AnimateError, match="'resolution' must be int"):
        ModelConfig.from_dict({**data, "resolution": "64"})
    with pytest.raises(AnimateError, match="'attention' must be bool"):
        ModelConfig.from_dict({**data, "attention": 1})
    # JSON has no tuples, and some writers drop the ".0" of a float
    back = ModelConfig.from_dict({**data, "selection": [0] * 3 + [1.5] * 11, "warp_reg": 1})
    assert back.selection == (0,) * 3 + (1.5,) * 11 and back.warp_reg == 1.0 and type(back.warp_reg) is float
    minimal = ModelConfig.from_dict({"preset": "x", "resolution": 64, "g_down": 3})
    assert minimal == ModelConfig(preset="x", resolution=64, g_down=3)


def test_removed_experiment_keys_load_when_neutral():
    neutral = {key: value for key, (value, _, _) in REMOVED_EXPERIMENTS.items()}
    assert neutral == {"n_refs": 1, "skip_width": 0, "mouth_refiner": 0}
    data = {**TINY.to_dict(), **neutral}
    assert ModelConfig.from_dict(data) == TINY
    assert "n_refs" in data  # the caller's dict is left as it was
    assert not set(neutral) & set(TINY.to_dict())  # and they are never written again


@pytest.mark.parametrize("key,value,tag", [
    ("n_refs", 3, "exp/multi-reference"),
    ("n_refs", 0, "exp/multi-reference"),
    ("skip_width", 32, "exp/skip-path"),
    ("mouth_refiner", 32, "exp/mouth-refiner"),
    ("mouth_refiner", True, "exp/mouth-refiner"),
    ("n_refs", 1.0, "exp/multi-reference"),
])
def test_removed_experiment_keys_are_refused_otherwise_naming_the_tag(key, value, tag):
    with pytest.raises(AnimateError) as info:
        ModelConfig.from_dict({**TINY.to_dict(), key: value})
    msg = str(info.value)
    assert f"{key}={value!r}" in msg and tag in msg and "removed" in msg and "\n" not in msg


def test_finetune_config_defaults_and_validation():
    ft = FinetuneConfig()
    assert (ft.steps, ft.lr_g, ft.lr_d, ft.content_size, ft.mouth_weight, ft.jitter) == (40, 5e-5, 2e-4, 128, 1.0, 0.04)
    assert (ft.steps_on("cuda"), ft.steps_on("cpu"), ft.replace(cpu_steps=7).steps_on("cpu")) == (40, 0, 7)
    assert ft.replace(steps=0).steps == 0 and ft.replace(content_size=None).content_size is None
    for bad, message in [({"steps": -1}, "0 or more"), ({"steps": 1.5}, "0 or more"), ({"steps": True}, "0 or more"),
                         ({"cpu_steps": -2}, "cpu_steps"),
                         ({"lr_g": 0.0}, "lr_g"), ({"lr_d": math.nan}, "lr_d"), ({"content_size": 8}, "content_size"),
                         ({"mouth_weight": -1.0}, "mouth_weight"), ({"jitter": -0.1}, "jitter")]:
        with pytest.raises(AnimateError, match=message):
            FinetuneConfig(**bad)
