"""Property tests: malformed input always gets a nascore error naming the problem, never a crash."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nascore.config import apply_overrides, validate
from nascore.errors import ArchitectureError, ConfigError, NascoreError
from nascore.registry import build_registry
from nascore.testing import tiny_config

REG = build_registry(load_entry_points=False)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(node, path, value):
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@FAST
@given(seed=st.integers(0, 10**6), value=values, extra_key=st.text(min_size=1, max_size=8))
def test_any_corrupted_config_is_a_config_error(seed, value, extra_key):
    data = tiny_config(stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 2}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 5}}, "evaluator": "accuracy"},
        {"kind": "retrain", "epochs": 1},
    ])
    rng = random.Random(seed)
    paths = [p for p in _paths(data) if p]
    path = rng.choice(paths)
    if rng.random() < 0.2 and isinstance(data.get(path[0]), dict):
        path = (path[0], extra_key)
    _set(data, path, value)
    try:
        validate(data, REG)
    except ConfigError as e:
        assert e.problems and all(":" in line for line in e.problems)


@FAST
@given(items=st.lists(st.text(max_size=30), max_size=4))
def test_any_set_override_is_applied_or_refused_cleanly(items):
    try:
        data = apply_overrides(tiny_config(), items)
    except ConfigError as e:
        assert all(line.startswith("--set") for line in e.problems)
        return
    try:
        validate(data, REG)
    except ConfigError:
        pass


@pytest.mark.parametrize("space_name", ["tiny_chain", "nb201", "tiny_cell", "mobilenet", "shufflenet"])
def test_any_architecture_string_parses_or_says_why(space_name):
    if space_name not in REG.components["space"]:
        pytest.skip(f"space {space_name} not registered")
    space = REG.get("space", space_name).build({}, None)
    opts = sorted({o for d in space.decisions for o in d.options})
    good = space.format(space.sample(random.Random(0)))

    @FAST
    @given(st.one_of(
        st.text(max_size=60),
        st.lists(st.sampled_from(opts + ["", "x", "~", "|", "+", "-", "~0", "conv9"]), max_size=25).map("-".join),
        st.integers(0, len(good)).flatmap(lambda i: st.text(max_size=3).map(lambda t: good[:i] + t + good[i:])),
    ))
    def check(text):
        try:
            arch = space.parse(text)
        except ArchitectureError as e:
            assert str(e).strip()
            return
        assert space.contains(arch) and space.parse(space.format(arch)) == arch

    check()


def test_wrong_types_from_components_are_reported_with_the_plugin():
    from nascore import hookimpl
    from nascore.testing import make_registry, run_config

    class BadSelector:
        def __init__(self, cfg, ctx=None):
            pass

        def search(self, ctx, evaluator):
            return ["not", "a", "result"]

    class BadEvaluator:
        metric, higher_is_better = "acc", True

        def __init__(self, cfg, ctx=None):
            pass

        def score(self, archs, ctx):
            return 0.5

    class Plugin:
        @hookimpl
        def register_selectors(self, register):
            register("bad_selector", BadSelector)

        @hookimpl
        def register_evaluators(self, register):
            register("bad_evaluator", BadEvaluator)

    reg = make_registry((Plugin(), "nascore-bad"))
    with pytest.raises(NascoreError, match="bad_selector.*returned list"):
        run_config(tiny_config(stages=[{"kind": "search", "selector": "bad_selector"}]), None, registry=reg)
    with pytest.raises(NascoreError, match="BadEvaluator.score returned float"):
        run_config(tiny_config(stages=[{"kind": "search", "selector": "random", "evaluator": "bad_evaluator"}]), None,
                   registry=reg)
