"""What a person reads after a run: plots, the HTML report (rendered in headless Chromium), compare."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from nascore import cli
from nascore.io import read_json
from nascore.report import compare, generation_curves, make_plots, pareto_front, space_snapshots, stage_names, write_report
from nascore.testing import run_config, tiny_config

CHROMIUM = os.environ.get("NASCORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _config(seed: int = 0) -> dict:
    return tiny_config(seed=seed, log_every=2, stages=[
        {"kind": "train", "trainer": {"name": "single_path", "options": {"epochs": 1}}},
        {"kind": "search", "selector": {"name": "random", "options": {"samples": 12}}, "evaluator": {"name": "accuracy"}},
        {"kind": "retrain", "epochs": 1, "top": 1},
    ])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two finished runs (the first with shrinking rounds appended to its log, as a shrink stage writes them)."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for seed in (0, 1):
        run_config(_config(seed), root / f"run{seed}")
        out.append(root / f"run{seed}")
    start = _logged_spaces(out[0])[0]["allowed"]
    with open(out[0] / "metrics.jsonl", "a") as f:
        for r in (1, 2):  # two rounds, each dropping the first remaining op of every decision
            allowed = [a[r:] for a in start]
            f.write(json.dumps({"kind": "event", "event": "space", "stage": "9", "round": r, "allowed": allowed}) + "\n")
    return out


def _logged_spaces(run: Path) -> list[dict]:
    return [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if m.get("event") == "space"]


def test_pareto_front_is_the_set_of_undominated_points():
    rng = random.Random(0)
    for _ in range(50):
        pts = [(rng.randint(0, 20), rng.randint(0, 20)) for _ in range(rng.randint(1, 30))]
        front = pareto_front(pts)
        undominated = {i for i, (c, s) in enumerate(pts)
                       if not any((c2 <= c and s2 >= s) and (c2, s2) != (c, s) for c2, s2 in pts)}
        # duplicates of a front point count once: compare the points, not the indices
        assert {pts[i] for i in front} == {pts[i] for i in undominated}
        assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


def test_plots_cover_what_the_run_logged(runs):
    written = {p.name for p in make_plots(runs[0])}
    assert written == {"pareto.png", "search.png", "training.png", "space.png", "retrain.png"}
    for name in written:
        assert (runs[0] / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "space.png" not in {p.name for p in make_plots(runs[1])}  # no shrinking, no survival plot


def test_space_snapshots_start_from_the_initial_space_and_skip_repeats(runs):
    logged = _logged_spaces(runs[1])
    assert [m["stage"] for m in logged] == ["setup"]  # a run logs the space it starts from
    snaps = space_snapshots(logged + logged + [{"event": "space", "stage": "2", "round": 1, "allowed": [["x"]]}])
    assert [label for label, _ in snaps] == ["start", "stage 2, round 1"]
    assert [label for label, _ in space_snapshots(_logged_spaces(runs[0]))] == ["start", "stage 9, round 1",
                                                                                "stage 9, round 2"]
    loop = [{"event": "space", "stage": "0.3.1", "allowed": [["y"]]}]
    assert space_snapshots(loop)[0][0] == "stage 0.3.1 (loop round 3)"


def test_generation_curves_read_every_evolution_selector_s_records():
    metrics = [
        {"kind": "generation", "stage": "1", "generation": 0, "best": 0.5, "mean": 0.3},
        {"kind": "generation", "stage": "1", "generation": 1, "best": 0.6, "mean": None},
        {"kind": "rea", "stage": "2", "cycle": 10, "best": 0.7},
        {"kind": "event", "event": "resume", "stage": "1", "generation": 1},
        {"kind": "candidate", "stage": "1", "score": 0.9},
    ]
    assert generation_curves(metrics) == {("1", "generation"): [(0, 0.5, 0.3), (1, 0.6, None)],
                                          ("2", "cycle"): [(10, 0.7, None)]}


def test_an_evolution_run_plots_progress_per_generation(tmp_path):
    cfg = _config()
    cfg["stages"][1] = {"kind": "search", "evaluator": {"name": "accuracy"},
                        "selector": {"name": "evolution", "options": {"population": 6, "generations": 2, "top_k": 3}}}
    run_config(cfg, tmp_path / "run")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [g for g, *_ in generation_curves(metrics)[("1", "generation")]] == [0, 1, 2]
    evaluated = [m["arch"] for m in metrics if m["kind"] == "candidate"]
    assert len(evaluated) == len(set(evaluated))  # each candidate logged once: plots count each once
    assert "search.png" in {p.name for p in make_plots(tmp_path / "run")}


def test_stage_names_unroll_loops_like_the_pipeline():
    cfg = {"stages": [{"kind": "loop", "rounds": 2, "stages": [
        {"kind": "train", "trainer": {"name": "t"}}, {"kind": "shrink", "selector": {"name": "s"}}]},
        {"kind": "export"}]}
    assert stage_names(cfg) == {"0.0.0": "train (t)", "0.0.1": "shrink (s)", "0.1.0": "train (t)",
                                "0.1.1": "shrink (s)", "1": "export"}


def test_report_is_one_self_contained_page(runs):
    page = write_report(runs[0]).read_text()
    results = json.loads((runs[0] / "results.json").read_text())
    chosen = results["candidates"][0]
    assert chosen["arch"] in page and f"{100 * chosen['retrain']['test_acc']:.2f}%" in page
    banner = page.split('id="chosen"', 1)[1].split("</p>", 1)[0]
    assert f"retrained: <b>{100 * chosen['retrain']['test_acc']:.2f}%</b>" in banner  # the banner says it too
    assert page.count("data:image/png;base64,") == 5  # pareto, search, training, retrain, space
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens from disk, offline
    assert "train (single_path)" in page and "search (random)" in page  # timings by stage name
    assert "trainer:" in page and "single_path" in page  # the resolved config


def test_report_shows_the_plots_plugins_draw_too(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    shutil.copy(run / "plots" / "pareto.png", run / "plots" / "plugin_round0.png")
    page = write_report(run).read_text()
    assert page.count("data:image/png;base64,") == 5 and 'alt="plugin_round0"' in page


def test_report_of_a_run_that_has_not_finished(tmp_path):
    from nascore.pipeline.run import open_run

    ctx = open_run(_config(), run_dir=tmp_path / "run", quiet=True,
                   registry=__import__("nascore.testing", fromlist=["make_registry"]).make_registry())
    ctx.log.close()
    page = write_report(tmp_path / "run").read_text()
    assert "(none yet)" in page and page.count("pending") == 3


def test_compare_lists_runs_side_by_side(runs, capsys):
    assert cli.main(["compare", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["run", "method", "best"] and "search" in header and "total" in header
    for run, line in zip(runs, lines[2:]):
        best = json.loads((run / "results.json").read_text())["candidates"][0]
        assert line.startswith(run.name) and "single_path+random" in line and best["arch"] in line
        assert f"{100 * best['retrain']['test_acc']:.2f}%" in line


def test_report_and_compare_refuse_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert cli.main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("is not a run folder (no config.yaml)") == 2 and "Traceback" not in err


def _legends(run: Path) -> dict[str, list[str]]:
    """The legend entries each plot drew (make_plots stores them in the PNG's Description chunk)."""
    from PIL import Image

    return {p.stem: Image.open(p).text.get("Description", "").split("\n") for p in (run / "plots").glob("*.png")}


def test_retrain_curve_is_drawn_from_the_logged_steps(runs):
    """retrain.png plots the retrain_step records (loss every log_every steps), one line per retrained index."""
    steps = [m for m in map(json.loads, (runs[0] / "metrics.jsonl").read_text().splitlines())
             if m.get("kind") == "retrain_step"]
    assert len(steps) >= 2 and all(isinstance(m["loss"], float) for m in steps)
    assert [m["step"] for m in steps] == sorted(m["step"] for m in steps)
    make_plots(runs[0])
    assert (runs[0] / "plots" / "retrain.png").exists()
    assert len([label for label in _legends(runs[0])["retrain"] if label.startswith("retrain #")]) == 1


# Each image drawn on a canvas: its size, and the share of opaque pixels in its last row (matplotlib
# figures are opaque; an image cut short decodes its first rows and leaves the rest transparent).
DECODED_IMAGES = """async () => {
  const out = [];
  for (const img of Array.from(document.images)) {
    try { await img.decode(); } catch (e) { out.push([img.alt, 0, 0, 0]); continue; }
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const row = g.getImageData(0, c.height - 1, c.width, 1).data;
    let opaque = 0;
    for (let k = 3; k < row.length; k += 4) if (row[k] > 0) opaque++;
    out.push([img.alt, img.naturalWidth, img.naturalHeight, opaque / c.width]);
  }
  return out;
}"""


def test_report_renders_in_headless_chromium(runs):
    """Opened from disk in a real browser: the chosen architecture shows and every plot decodes."""
    if CHROMIUM is None or __import__("importlib").util.find_spec("playwright") is None:
        if os.environ.get("NASCORE_CI"):
            pytest.fail("headless Chromium test needs Debian's chromium and playwright (pip install -e '.[test]')")
        pytest.skip("chromium or playwright not installed")
    from playwright.sync_api import sync_playwright

    page_path = write_report(runs[0])
    best = read_json(runs[0] / "results.json")["candidates"][0]
    chosen, acc = best["arch"], best["retrain"]["test_acc"]
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            assert chosen in page.inner_text("#chosen")
            assert f"retrained: {100 * acc:.2f}%" in page.inner_text("#chosen")  # the banner's retrained accuracy
            images = page.evaluate(DECODED_IMAGES)
        finally:
            browser.close()
    assert sorted(alt for alt, *_ in images) == ["pareto", "retrain", "search", "space", "training"]
    sizes = {alt: (w, h) for alt, w, h, _ in images}
    assert sizes["training"][0] >= 900 and sizes["retrain"][0] >= 900  # full page width, not a thumbnail
    legends = _legends(runs[0])
    assert any(label.replace("\n", "") == f"chosen: {chosen}" for label in legends["pareto"])  # whole, not cut
    assert {"loss (stage 0)", "batch acc (stage 0)"} <= set(legends["training"])  # every line labelled
    assert any(label.startswith("retrain #0: training loss") and f"{100 * acc:.2f}%" in label
               for label in legends["retrain"])
    for alt, width, height, bottom_row_opaque in images:
        assert width > 100 and height > 100, f"plot {alt} did not load ({width}x{height})"
        assert bottom_row_opaque == 1.0, f"plot {alt} decoded only in part (a truncated PNG draws its top rows)"
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing fetched from a network
