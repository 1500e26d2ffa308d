"""Every plugin installs alone on top of the core, as the README says, and runs its smoke recipe.

Builds the core's wheel and each plugin's wheel (from copies of the sources, so the shared tree
gets no build/ folders), then per plugin: a fresh venv whose only view of the heavy dependencies
(torch, torchvision, pydantic, fvcore …) is a folder of links into this interpreter's site-packages
with every nascore distribution left out, ``pip install --no-index --find-links WHEELS`` of the
plugin alone (pip resolves its declared dependencies from the wheels; nothing is downloaded): the
venv then holds exactly two nascore distributions, the core and the plugin, and
``nascore run RECIPE --smoke`` (the README's command) runs the plugin's recipe.

Slow (measured on the shared 2-core box under load: about 50 s per plugin, most of it the smoke run
and torch's import). The default suite runs two plugins, abs and cream (two of the three that used
to need nascore-spos); ``NASCORE_INSTALL_ALL=1`` runs every plugin and also checks ``nascore plugins``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: plugin folder -> (distribution, its smoke recipe)
PLUGINS = {
    "abs": ("nascore-abs", "abs-spos"), "cream": ("nascore-cream", "cream_spos"), "rlnas": ("nascore-rlnas", "rlnas"),
    "spos": ("nascore-spos", "spos"), "dna": ("nascore-dna", "dna"), "neas": ("nascore-neas", "neas"),
    "nse": ("nascore-nse", "nse"), "pwkd": ("nascore-pwkd", "pwkd"), "setn": ("nascore-setn", "setn"),
    "tnas": ("nascore-tnas", "tnas"), "zerocost": ("nascore-zerocost", "zerocost"),
}
DEFAULT = ("abs", "cream")
ALL = bool(os.environ.get("NASCORE_INSTALL_ALL"))
SELECTED = sorted(PLUGINS) if ALL else list(DEFAULT)
IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".venv", "runs", "site", "tests")


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NASCORE_LOAD_PLUGINS", "NASCORE_DISABLE_PLUGINS")}
CLEAN_ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run outside the repository (so its folder is not on sys.path) without PYTHONPATH."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV, cwd=cwd or Path(cmd[-1]).anchor)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """The core's wheel and the selected plugins' wheels, built without network or build isolation."""
    root = tmp_path_factory.mktemp("wheels")
    src, dist = root / "src", root / "dist"
    projects = [("core", REPO)] + [(p, REPO / "plugins" / p) for p in SELECTED]
    for name, path in projects:
        ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".venv", "runs", "site", "tests",
                                        "plugins", "benchmarks", "examples", "docs") if name == "core" else IGNORE
        shutil.copytree(path, src / name, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist),
          *[str(src / n) for n, _ in projects]], cwd=root)
    return dist


@pytest.fixture(scope="module")
def heavy_deps(tmp_path_factory) -> Path:
    """Links to everything installed here except nascore's own distributions and their path hooks."""
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path_factory.mktemp("deps")
    for entry in site.iterdir():
        low = entry.name.lower()
        if low.startswith(("nascore", "__editable__", "_nascore")) or low.endswith(".pth") or low == "__pycache__":
            continue
        (deps / entry.name).symlink_to(entry)
    return deps


def _venv(path: Path, deps: Path) -> tuple[Path, Path]:
    """A venv without pip whose site sees ``deps`` through a .pth; (its python, its site-packages)."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent)
    site = next((path / "lib").glob("python*/site-packages"))
    (site / "heavy_deps.pth").write_text(str(deps) + "\n")
    return path / "bin" / "python", site


def _nascore_dists(site: Path) -> list[str]:
    return sorted(d.name.split("-")[0] for d in site.glob("nascore*.dist-info"))


def test_the_heavy_deps_folder_hides_every_nascore_distribution(heavy_deps):
    """Else the clean venv would see the editable installs and the install would prove nothing."""
    assert not [p.name for p in heavy_deps.iterdir() if p.name.lower().startswith("nascore") or p.suffix == ".pth"]
    assert (heavy_deps / "torch").exists()


@pytest.mark.parametrize("plugin", SELECTED)
def test_plugin_installs_alone_and_runs_its_smoke_recipe(plugin, wheels, heavy_deps, tmp_path):
    dist_name, recipe = PLUGINS[plugin]
    py, site = _venv(tmp_path / "venv", heavy_deps)
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-index", "--find-links", str(wheels),
          dist_name], cwd=tmp_path)
    assert _nascore_dists(site) == sorted(["nascore", dist_name.replace("-", "_")])  # the core and the plugin only
    nascore = str(tmp_path / "venv" / "bin" / "nascore")
    if ALL:
        listed = _run([nascore, "plugins"], cwd=tmp_path).stdout
        assert dist_name in listed and "[failed]" not in listed, listed
    out = _run([nascore, "run", recipe, "--smoke", "--quiet", "--out", str(tmp_path / "run")], cwd=tmp_path)
    assert (tmp_path / "run" / "results.json").is_file(), out.stdout
