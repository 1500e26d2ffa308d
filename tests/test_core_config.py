"""A bad config gets one line per problem naming the field, the bad value and what is allowed."""

import pytest

from nascore.config import apply_overrides, validate
from nascore.errors import ConfigError
from nascore.registry import build_registry
from nascore.testing import tiny_config


@pytest.fixture(scope="module")
def reg():
    return build_registry(load_entry_points=False)


def problems(data, reg):
    with pytest.raises(ConfigError) as e:
        validate(data, reg)
    return e.value.problems


def test_valid_config_passes_and_fills_defaults(reg):
    cfg, options = validate(tiny_config(), reg)
    assert cfg.data.batch_size == 32
    assert options["stages[0].trainer"].lr == 0.05


def test_component_options_are_validated_against_the_plugin_model(reg):
    data = tiny_config(stages=[{"kind": "train", "trainer": {"name": "single_path", "options": {"lr": -1, "epocs": 3}}}])
    lines = problems(data, reg)
    assert any(line.startswith("stages[0].trainer.options.lr:") and "greater than 0" in line and "-1" in line for line in lines)
    assert any(line.startswith("stages[0].trainer.options.epocs:") and "unknown field" in line for line in lines)


def test_unknown_component_lists_registered_ones(reg):
    data = tiny_config(stages=[{"kind": "search", "selector": "evolutoin"}])
    (line,) = problems(data, reg)
    assert line.startswith("stages[0].selector.name:") and "no selector named 'evolutoin'" in line
    assert "random" in line


def test_all_problems_are_reported_at_once(reg):
    data = tiny_config(seed=-1, data={"batch_size": 0}, constraint={"macs_min": 5, "macs_max": 1})
    data["stages"] = [{"kind": "teleport"}]
    lines = problems(data, reg)
    joined = "\n".join(lines)
    assert "seed:" in joined and "data.batch_size:" in joined and "constraint:" in joined
    assert "unknown stage kind" in joined
    assert "macs_min (5) is larger than macs_max (1)" in joined


def test_missing_sections_are_named(reg):
    lines = problems({"stages": []}, reg)
    joined = "\n".join(lines)
    assert "space: Field required" in joined and "dataset: Field required" in joined
    assert "stages:" in joined


def test_loop_stages_validate_inner_components(reg):
    data = tiny_config(stages=[{"kind": "loop", "rounds": 2, "stages": [
        {"kind": "train", "trainer": {"name": "single_path", "options": {"momentum": 2}}}]}])
    (line,) = problems(data, reg)
    assert line.startswith("stages[0].stages[0].trainer.options.momentum:")


def test_set_overrides_parse_yaml_values():
    data = apply_overrides(tiny_config(), ["seed=3", "stages.0.trainer.options.epochs=2", "constraint.macs_max=1e6",
                                           "space.options.width=16"])
    assert data["seed"] == 3 and data["stages"][0]["trainer"]["options"]["epochs"] == 2
    assert data["constraint"]["macs_max"] == 1e6 and data["space"]["options"]["width"] == 16


@pytest.mark.parametrize("item,needle", [
    ("seed", "expected PATH=VALUE"),
    ("stages.5.kind=train", "not an index of a list of 1"),
    ("name.x=1", "name is a value, not a section"),
    ("seed=[1,", "not valid YAML"),
])
def test_bad_overrides_say_what_is_wrong(item, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        apply_overrides(tiny_config(), [item])


def test_yaml_syntax_errors_name_the_line(tmp_path):
    from nascore.config import load_yaml

    p = tmp_path / "bad.yaml"
    p.write_text("space: {name: tiny_chain\nstages: [\n")
    with pytest.raises(ConfigError, match="bad.yaml line"):
        load_yaml(p)
