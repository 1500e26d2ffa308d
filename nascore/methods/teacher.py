"""Teachers for distillers: a frozen model loaded from a spec string, queried without gradients.

Distillers (logit KD, PWKD, DNA's block-wise feature loss) all need "the teacher's output for this
batch" from a model that is *not* the student. This module loads one from where nascore users keep
models and gives every distiller the same small API (:class:`Teacher`). Specs:

``supernet``
    This run's supernet, run as one path (default: the largest path by MACs). In a ``retrain`` stage
    this is the supernet trained by earlier stages (e.g. PWKD's slimmable teacher).
``supernet:<run_dir>``
    Another run's final supernet (its ``config.yaml`` space, ``checkpoints/supernet.pt`` weights).
``run:<run_dir>[#k]``
    Candidate ``k`` (default 0) of another run as a standalone child, with its retrained weights
    (``retrain/<k>/model.pt``), or its exported ones (``export/<k>/model.pt``) if it was not retrained.
``export:<folder>``
    An exported child (``arch.json`` + ``model.pt``, e.g. ``runs/x/export/0``).
``torchvision:<name>``
    A torchvision classification model. Nothing is downloaded: weights come only from a local file
    (the distiller's ``weights`` option); a 1-channel dataset is fed to 3-channel models by repeating
    the channel.
``<folder>``
    A run folder (has ``config.yaml``) is read as ``run:``; an export folder (``arch.json``) as ``export:``.

Teachers are always run in eval mode under ``torch.no_grad``; a supernet teacher is switched to its
path for the call and switched back afterwards, so it can share the module with a trainer.
"""

from __future__ import annotations

import difflib
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from nascore.arch import Architecture
from nascore.errors import CheckpointError, NascoreError
from nascore.io import load_torch, read_json

SPEC_HELP = (
    "a teacher is one of: supernet, supernet:<run_dir>, run:<run_dir>[#k], export:<folder>, "
    "torchvision:<name> (with a local weights file), or a run/export folder"
)


class RepeatChannels(nn.Module):
    """Feed a 1-channel image to a model that expects ``channels`` (repeats the channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x


def classifier_of(model: nn.Module) -> nn.Module | None:
    """The final linear layer (its input is the penultimate feature): ``model.classifier_module()``
    when the model defines it, else the last ``nn.Linear`` in module order."""
    fn = getattr(model, "classifier_module", None)
    if callable(fn):
        return fn()
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


class Teacher:
    """A frozen model and how to run it (see module docstring).

    ``kind`` is ``"child"``, ``"supernet"`` or ``"torchvision"``; ``space``/``arch`` are set for
    nascore models (the child's architecture, or the supernet path that :meth:`logits` runs);
    ``prepare`` adapts the input (channel repeat for torchvision models).
    """

    def __init__(
        self, model: nn.Module, *, kind: str, source: str, space: Any = None, arch: Architecture | None = None,
        prepare: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.kind = kind
        self.source = source
        self.space = space
        self.arch = arch
        self.prepare = prepare if prepare is not None else nn.Identity()
        if kind != "supernet":
            for p in model.parameters():
                p.requires_grad_(False)
            model.eval()

    def __repr__(self) -> str:
        path = f", arch={self.space.format(self.arch)!r}" if self.space is not None and self.arch is not None else ""
        return f"Teacher({self.kind}: {self.source}{path})"

    def at(self, arch: Architecture) -> "Teacher":
        """The same supernet teacher running another path (PWKD's sub-networks)."""
        if self.kind != "supernet":
            raise NascoreError(f"teacher {self.source} is a {self.kind}, not a supernet: it has no other paths",
                               hint="use a supernet teacher (`supernet` or `supernet:<run_dir>`)")
        self.space.check(arch)
        return Teacher(self.model, kind="supernet", source=self.source, space=self.space, arch=arch, prepare=self.prepare)

    def parse(self, text: str) -> Architecture:
        """An architecture string of the teacher's space (supernet teachers)."""
        if self.space is None:
            raise NascoreError(f"teacher {self.source} has no search space to parse {text!r} in")
        return self.space.parse(text)

    @torch.no_grad()
    def run(self, fn: Any, x: torch.Tensor) -> Any:
        """Call ``fn(model, prepared_x)`` in eval mode, on the teacher's path, and restore the model."""
        model = self.model
        was = model.training
        prev = getattr(model, "active_arch", None) if self.kind == "supernet" else None
        model.eval()
        try:
            if self.kind == "supernet":
                model.set_active(self.arch)
            return fn(model, self.prepare(x))
        finally:
            if self.kind == "supernet" and prev is not None:
                model.set_active(prev)
            model.train(was)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for ``x`` (no gradient)."""
        return self.run(lambda m, inp: m(inp), x)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the penultimate feature (the input of the final linear layer), flattened."""
        return self.run(lambda m, inp: forward_with_penultimate(m, inp), x)


def forward_with_penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(model(x), input of its final linear layer)``; works with or without gradients."""
    head = classifier_of(model)
    if head is None:
        raise NascoreError(f"{type(model).__name__} has no final nn.Linear: cannot take its penultimate feature")
    store: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda m, args: store.append(args[0]))
    try:
        out = model(x)
    finally:
        handle.remove()
    if not store:
        raise NascoreError(f"the final linear layer of {type(model).__name__} was not called in forward")
    return out, store[-1].flatten(1)


# -- loading ----------------------------------------------------------------------------------------
def load_teacher(spec: str, ctx: Any = None, *, weights: str | None = None, arch: str | None = None) -> Teacher:
    """Load the teacher named by ``spec`` (module docstring) onto ``ctx.device``.

    ``weights`` is the local weights file of a ``torchvision:`` teacher; ``arch`` the path of a
    supernet teacher (an architecture string; default: the largest path by MACs).
    """
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind not in ("supernet", "run", "export", "torchvision"):
        folder = Path(spec)
        if (folder / "config.yaml").exists():
            kind, rest = "run", spec
        elif (folder / "arch.json").exists():
            kind, rest = "export", spec
        else:
            raise NascoreError(f"teacher {spec!r}: not a teacher spec nor a run/export folder", hint=SPEC_HELP)
    if weights is not None and kind != "torchvision":
        raise NascoreError(f"teacher {spec!r}: `weights` is only for torchvision teachers",
                           hint="nascore teachers carry their own weights (run/export/supernet folders)")
    if arch is not None and kind != "supernet":
        raise NascoreError(f"teacher {spec!r}: a path (`teacher_arch`) is only for supernet teachers")
    device = getattr(ctx, "device", torch.device("cpu"))
    if kind == "supernet":
        teacher = _load_supernet(rest, ctx, arch)
    elif kind == "run":
        teacher = _load_run_child(rest, ctx)
    elif kind == "export":
        teacher = _load_export(Path(rest), ctx)
    else:
        teacher = _load_torchvision(rest, ctx, weights)
    if teacher.kind != "supernet" or rest:
        teacher.model.to(device)
    return teacher


def _registry(ctx: Any) -> Any:
    """The run's components (``ctx.registry``): another run's space is rebuilt by name through them.

    Taken from the context rather than the process-wide registry, so that this helper stays beneath
    the registry (which loads the built-in distillers that use it).
    """
    reg = getattr(ctx, "registry", None)
    if reg is None:
        raise NascoreError("a teacher from another run or an export rebuilds its space by name, "
                           "and needs the run's components (ctx.registry)",
                           hint="call load_teacher(spec, ctx) with the run's context")
    return reg


def build_space(space_ref: dict[str, Any], input_shape: Any, num_classes: int, ctx: Any = None) -> Any:
    """Rebuild a run's search space from its config entry ``{name, options}`` and data shape."""
    comp = _registry(ctx).get("space", space_ref["name"])
    shim = SimpleNamespace(data=SimpleNamespace(input_shape=tuple(int(v) for v in input_shape),
                                                num_classes=int(num_classes)))
    return comp.build(space_ref.get("options") or {}, shim)


def largest_arch(space: Any, table: Any) -> Architecture:
    """Per decision the allowed option with the most MACs (then params): the biggest path.

    Width decisions take their most channels; an op's MACs then include its width terms at those widths.
    """
    wd = table.width_decisions() if hasattr(table, "width_decisions") else set()
    w = [max(table.channels_of(i, o) for o in a) if i in wd else 0 for i, a in enumerate(space.allowed)]

    def cost(i: int, o: str) -> tuple[int, int]:
        extra = []
        for terms in (getattr(table, "macs_terms", {}), getattr(table, "params_terms", {})):
            extra.append(sum(c * math.prod(w[s] for s in src) for c, src in terms.get((i, o), ())))
        return table.macs_table[i][o] + extra[0], table.params_table[i][o] + extra[1]

    ops = []
    for i, allowed in enumerate(space.allowed):
        ops.append(max(allowed, key=lambda o: table.channels_of(i, o)) if i in wd
                   else max(allowed, key=lambda o: cost(i, o)))
    return Architecture(ops)


def _num_classes(ctx: Any, where: str) -> int:
    data = getattr(ctx, "data", None)
    if data is None:
        raise NascoreError(f"{where}: cannot tell the number of classes", hint="load it inside a run (a run context)")
    return int(data.num_classes)


def _load_supernet(rest: str, ctx: Any, arch: str | None) -> Teacher:
    if not rest:
        if ctx is None or not hasattr(ctx, "supernet"):
            raise NascoreError("teacher `supernet` is this run's supernet and needs a run context")
        space, net, table, source = ctx.base_space, ctx.supernet, ctx.cost, "this run's supernet"
    else:
        run_dir = Path(rest)
        cfg = _run_config(run_dir)
        results = _results(run_dir)
        shape = results.get("input_shape") or list(getattr(getattr(ctx, "data", None), "input_shape", ()))
        if not shape:
            raise CheckpointError(f"{run_dir}: results.json has no input_shape", hint="finish at least one stage of that run")
        space = build_space(cfg["space"], shape, _num_classes(ctx, f"teacher supernet:{rest}"), ctx)
        net = space.build_supernet()
        weights = run_dir / "checkpoints" / "supernet.pt"
        net.load_state_dict(load_torch(weights)["supernet"])
        net.to(getattr(ctx, "device", "cpu")).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        table = space.cost_table(tuple(shape))
        source = f"supernet of {run_dir}"
    path = space.parse(arch) if arch else largest_arch(space, table)
    return Teacher(net, kind="supernet", source=source, space=space, arch=path)


def _run_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no config.yaml)", hint="pass the folder `nascore run` wrote")
    return yaml.safe_load(path.read_text())


def _results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    return read_json(path) if path.exists() else {}


def _load_run_child(rest: str, ctx: Any) -> Teacher:
    folder, _, idx = rest.partition("#")
    run_dir = Path(folder)
    try:
        k = int(idx) if idx else 0
    except ValueError:
        raise NascoreError(f"teacher run:{rest}: {idx!r} is not a candidate rank", hint="write run:<run_dir>#0") from None
    cfg = _run_config(run_dir)
    export = run_dir / "export" / str(k)
    if (export / "arch.json").exists() and not (run_dir / "retrain" / str(k) / "model.pt").exists():
        return _load_export(export, ctx)
    results = _results(run_dir)
    cands = results.get("candidates") or (read_json(run_dir / "state.json").get("candidates", [])
                                          if (run_dir / "state.json").exists() else [])
    if not 0 <= k < len(cands):
        raise NascoreError(f"teacher run:{rest}: the run has {len(cands)} candidate(s)",
                           hint="finish that run's search stage, or pick an existing rank with #k")
    weights = run_dir / "retrain" / str(k) / "model.pt"
    if not weights.exists():
        raise NascoreError(f"teacher run:{rest}: candidate {k} was neither retrained nor exported",
                           hint=f"add a retrain or export stage to that run (expected {weights})")
    if (export / "arch.json").exists():
        meta = read_json(export / "arch.json")
        shape, classes = meta["input_shape"], meta["num_classes"]
    else:
        shape = results.get("input_shape")
        classes = _num_classes(ctx, f"teacher run:{rest}")
    space = build_space(cfg["space"], shape, classes, ctx)
    arch = Architecture.from_json(cands[k]["ops"])
    model = space.build_supernet().child(arch, inherit=False)
    _load_state(model, load_torch(weights)["model"], str(weights))
    return Teacher(model, kind="child", source=f"candidate {k} of {run_dir} (retrained)", space=space, arch=arch)


def _load_export(folder: Path, ctx: Any) -> Teacher:
    if not (folder / "arch.json").exists():
        raise CheckpointError(f"{folder} is not an export folder (no arch.json)",
                              hint="pass runs/<name>/export/<rank>, written by an export stage")
    meta = read_json(folder / "arch.json")
    space = build_space(meta["space"], meta["input_shape"], meta["num_classes"], ctx)
    arch = Architecture.from_json(meta["ops"])
    model = space.build_supernet().child(arch, inherit=False)
    _load_state(model, load_torch(folder / "model.pt")["model"], str(folder / "model.pt"))
    return Teacher(model, kind="child", source=f"export {folder}", space=space, arch=arch)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"{where}: weights do not fit the model rebuilt from its config ({first})",
                              hint="the space options or the dataset shape differ from those the weights were trained with") from None


def _load_torchvision(name: str, ctx: Any, weights: str | None) -> Teacher:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise NascoreError(f"teacher torchvision:{name}: no such torchvision classification model",
                           hint=f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()")
    classes = _num_classes(ctx, f"teacher torchvision:{name}") if ctx is not None and getattr(ctx, "data", None) else 1000
    state = None
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise CheckpointError(f"teacher weights {path}: file not found",
                                  hint="nascore never downloads weights; save a state_dict to a local file first")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"teacher weights {path}: cannot read ({type(e).__name__})",
                                  hint="save a plain state_dict with torch.save(model.state_dict(), path)") from None
        state = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
    model = tvm.get_model(name, weights=None, num_classes=classes)
    if state is not None:
        head = classifier_of(model)
        hname = next((n for n, m in model.named_modules() if m is head), None)
        w = state.get(f"{hname}.weight") if hname is not None else None
        if w is not None and w.shape[0] != classes:
            model = tvm.get_model(name, weights=None, num_classes=int(w.shape[0]))
        _load_state(model, state, str(weights))
    else:
        print(f"nascore: warning: teacher torchvision:{name} has no weights file: it is randomly initialised",
              file=sys.stderr)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = getattr(getattr(ctx, "data", None), "input_shape", (3,))[0] if ctx is not None else 3
    prepare = RepeatChannels(first.in_channels) if first is not None and channels == 1 and first.in_channels != 1 else None
    return Teacher(model, kind="torchvision", source=f"torchvision {name}" + (f" ({weights})" if weights else " (random init)"),
                   prepare=prepare)
