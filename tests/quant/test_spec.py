import json

import pytest
import torch.nn as nn

from yoloq.quant import QuantConfig, QuantRule, QuantSpec


def roundtrip(obj):
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))


def test_spec_validates():
    with pytest.raises(ValueError, match="num_bits"):
        QuantSpec(num_bits=9)
    with pytest.raises(ValueError, match="calibrator"):
        QuantSpec(calibrator="minmax")
    with pytest.raises(ValueError, match="per-channel"):
        QuantSpec(axis=0, calibrator="histogram")
    with pytest.raises(ValueError, match="unknown"):
        QuantSpec.from_dict({"bits": 8})


def test_spec_and_config_roundtrip_json():
    spec = QuantSpec(num_bits=7, axis=1, unsigned=True, calibrator="max", num_bins=1024)
    assert roundtrip(spec) == spec
    config = QuantConfig(
        input_spec=QuantSpec(unsigned=True),
        weight_spec=QuantSpec(num_bits=7, axis=0, calibrator="max"),
        ignore=[r"model\.105\.m\.", r"head$"],
        rules=[QuantRule(r"stem", input_spec=QuantSpec(calibrator="max")),
               QuantRule(r"drop", ignore=True)],
    )
    assert roundtrip(config) == config


def test_precedence_exact_then_first_regex_then_default():
    exact = QuantSpec(num_bits=6)
    first = QuantSpec(num_bits=5)
    second = QuantSpec(num_bits=4)
    config = QuantConfig(rules=[
        QuantRule(r"layer", input_spec=first),
        QuantRule(r"layer\.1", input_spec=second),
        QuantRule("layer.1.conv", input_spec=exact),
    ])
    assert config.specs_for("layer.1.conv", 0)[0] == exact
    assert config.specs_for("layer.1.other", 0)[0] == first
    assert config.specs_for("other", 0)[0] == QuantSpec()
    # Without an explicit weight spec, weights are per output channel of the module.
    assert config.specs_for("other", 1)[1] == QuantSpec(axis=1, calibrator="max")


def test_ignore_wins_over_rules_and_callables_resolve():
    config = QuantConfig(ignore=[lambda path, module: isinstance(module, nn.Linear)],
                         rules=[QuantRule(r"fc", input_spec=QuantSpec(num_bits=4))])
    assert config.ignored_by("fc", nn.Linear(2, 2)) is not None
    assert config.ignored_by("conv", nn.Conv2d(1, 1, 1)) is None
    with pytest.raises(ValueError, match="callable"):
        config.to_dict()
    resolved = roundtrip(config.resolved(["fc", "head.0"]))
    assert resolved.ignored_by("fc", nn.Conv2d(1, 1, 1)) is not None
    assert resolved.ignored_by("head.0", nn.Conv2d(1, 1, 1)) is not None
    assert resolved.ignored_by("fc2", nn.Linear(2, 2)) is None  # exact, not a prefix
