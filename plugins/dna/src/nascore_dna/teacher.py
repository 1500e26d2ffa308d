"""DNA's teacher: loaded from a file or trained in the run, cut into the student's blocks.

The ``dna`` trainer resolves the teacher once and records where it came from in
``ctx.state["dna"]`` (a JSON-able dict persisted with the run), so the ``block_distill`` evaluator
and the ``block_feature`` distiller of later stages — and a resumed run — use the same teacher
without naming it again. With no teacher named, the trainer first trains one in the run: a child
of the run's own space (default: its largest path) trained standalone on the train split, saved
as an export folder (``<run>/dna/teacher``), which is also how it is reloaded.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from nascore.errors import NascoreError
from nascore.evaluate import accuracy
from nascore.io import read_json, save_torch, write_json
from nascore.methods.teacher import Teacher, largest_arch, load_teacher
from nascore.trainer import diverged, lr_factor, stage_field, weights_finite

from nascore_dna.blocks import (
    Blocks, block_output_shapes, cut_by_shape, group_units, student_blocks, torchvision_units, unit_shapes,
)

STATE_KEY = "dna"
MEMORY = "memory"

_MEMORY: "weakref.WeakKeyDictionary[Any, Teacher]" = weakref.WeakKeyDictionary()
_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


class TeacherOptions(BaseModel):
    """Where the teacher comes from (shared by the trainer, evaluator and distiller)."""

    model_config = ConfigDict(extra="forbid")
    teacher: str | None = Field(
        None, description="run:<run_dir>[#k] | export:<folder> | torchvision:<name> | supernet:<run_dir>; "
        "null: the teacher the dna trainer used (or trains) in this run")
    teacher_weights: str | None = Field(None, description="local weights file of a torchvision teacher (never downloaded)")
    teacher_cuts: list[int] | None = Field(
        None, description="torchvision teachers: unit index after which each block ends (default: cut by shape)")


class TeacherBlocks:
    """A frozen teacher cut into the student's blocks. ``features(x)`` is ``[x, t_1, …, t_B]``:
    the input of block 0 (the image) and the teacher's output of every block."""

    def __init__(self, teacher: Teacher, units: list[list[torch.nn.Module]], shapes: list[tuple[int, ...]]) -> None:
        self.teacher = teacher
        self.blocks = Blocks(units, [() for _ in units])
        self.shapes = shapes

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def source(self) -> str:
        return self.teacher.source

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        def fn(model: Any, inp: torch.Tensor) -> list[torch.Tensor]:
            out, h = [x], inp
            for b in range(len(self.blocks)):
                h = self.blocks.run(b, h)
                out.append(h)
            return out

        return self.teacher.run(fn, x)


def cut_teacher(teacher: Teacher, student: Blocks, input_shape: Any, device: Any = "cpu",
                cuts: list[int] | None = None) -> TeacherBlocks:
    """Cut ``teacher`` into as many blocks as ``student`` has, with matching output shapes."""
    targets = block_output_shapes(student, input_shape, device)
    if teacher.kind in ("child", "supernet"):
        if cuts is not None:
            raise NascoreError("teacher_cuts is only for torchvision teachers",
                               hint="a nascore teacher is cut at its own space's blocks")
        tb = student_blocks(teacher.model)
        shapes = teacher.run(lambda m, inp: block_output_shapes(tb, input_shape, device), torch.zeros(1))
        if len(tb) != len(student) or [tuple(s) for s in shapes] != [tuple(t) for t in targets]:
            raise NascoreError(
                f"teacher {teacher.source} has blocks {shapes}, the student's are {targets}",
                hint="the teacher's space must have the student's block structure (same stage widths and strides)")
        return TeacherBlocks(teacher, tb.units, shapes)
    units, names = torchvision_units(teacher.model, teacher.source)
    shapes = unit_shapes(units, input_shape, teacher.prepare, device)
    idx = cut_by_shape(shapes, targets, cuts, names)
    return TeacherBlocks(teacher, group_units(units, idx), [shapes[i] for i in idx])


# -- resolving and recording ---------------------------------------------------------------------------
def record(ctx: Any, opts: TeacherOptions, spec: str, **extra: Any) -> None:
    """Remember the teacher in the run state for later stages and resume."""
    ctx.state[STATE_KEY] = {"teacher": spec, "teacher_weights": opts.teacher_weights,
                            "teacher_cuts": opts.teacher_cuts, **extra}


def resolve(ctx: Any, opts: TeacherOptions, student: Blocks) -> TeacherBlocks:
    """The teacher named by ``opts`` (or recorded in the run by the dna trainer), cut and cached."""
    spec, weights, cuts = opts.teacher, opts.teacher_weights, opts.teacher_cuts
    if spec is None:
        rec = ctx.state.get(STATE_KEY, {}) if isinstance(getattr(ctx, "state", None), dict) else {}
        if not rec.get("teacher"):
            raise NascoreError("no DNA teacher: this run has not trained or loaded one",
                               hint="run the dna trainer first, or set the `teacher` option (e.g. run:runs/teacher#0)")
        spec, weights, cuts = rec["teacher"], rec.get("teacher_weights"), rec.get("teacher_cuts")
    key = (spec, weights, tuple(cuts) if cuts else None)
    cache = _CACHE.setdefault(ctx, {})
    if key not in cache:
        if spec == MEMORY:
            if ctx not in _MEMORY:
                raise NascoreError("the in-run DNA teacher was kept in memory only and is gone",
                                   hint="give the run a folder (--out) so the teacher is saved with it")
            teacher = _MEMORY[ctx]
        else:
            teacher = load_teacher(spec, ctx, weights=weights)
        cache[key] = cut_teacher(teacher, student, ctx.data.input_shape, ctx.device, cuts)
    return cache[key]


# -- training a teacher in the run --------------------------------------------------------------------
#: ``teacher_space: auto``: per searched space, an in-run teacher that is **not** a member of it —
#: ``(space config, architecture)`` with the student's block shapes. A teacher drawn from the
#: searched space rewards its own look-alikes: on ``tiny_matched`` the space's "largest" path (all
#: tie, so ``conv-conv-conv-conv``) gave Kendall τ 0.07 ± 0.02, ``tiny_chain``'s conv5×4 (5×5 convs,
#: not an option of ``tiny_matched``) 0.12 ± 0.02, higher in each of 3 seeds
#: (``benchmarks/ranking.py --only dna``; the plugin README). Spaces not listed fall back to their
#: own largest path.
NON_MEMBER_TEACHERS: dict[str, tuple[dict[str, Any], str]] = {
    "tiny_matched": ({"name": "tiny_chain", "options": {}}, "conv5-conv5-conv5-conv5"),
}


def auto_teacher(ctx: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``(teacher_space, teacher_arch)`` chosen by ``teacher_space: auto`` for this run's space."""
    name = str(getattr(ctx.base_space, "name", ""))
    if name in NON_MEMBER_TEACHERS and ctx.cfg.space.name == name:
        ref, arch = NON_MEMBER_TEACHERS[name]
        options = dict(ref.get("options") or {})
        if hasattr(ctx.base_space, "width"):  # the same block shapes at any width of the student
            options["width"] = int(ctx.base_space.width)
        return {"name": ref["name"], "options": options}, arch
    return None, None


def teacher_space_of(ctx: Any, space_ref: dict[str, Any] | None) -> tuple[Any, Any, dict[str, Any]]:
    """The space an in-run teacher is a child of, its cost table and its config entry.

    ``space_ref`` (``{name, options}``, the ``teacher_space`` option) names another space with the
    student's block shapes — a teacher that is *not* a member of the searched space; ``None`` is
    the run's own space.
    """
    if space_ref is None:
        return ctx.base_space, ctx.cost, ctx.cfg.space.model_dump(mode="json")
    ref = {"name": space_ref["name"], "options": dict(space_ref.get("options") or {})}
    space = ctx.registry.get("space", ref["name"]).build(ref["options"], ctx)
    return space, space.cost_table(tuple(ctx.data.input_shape)), ref


def train_teacher(ctx: Any, arch_text: str | None, epochs: int, lr: float,
                  space_ref: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Train a child of the run's space (or of ``space_ref``) standalone; returns its spec and facts.

    Resumable: a finished teacher is reloaded from ``<run>/dna/teacher``; an interrupted one
    continues from its last epoch.
    """
    space, table, ref = teacher_space_of(ctx, space_ref)
    arch = space.parse(arch_text) if arch_text else largest_arch(space, table)
    folder = ctx.run_dir / "dna" / "teacher" if ctx.run_dir is not None else None
    if folder is not None and (folder / "model.pt").exists() and (folder / "arch.json").exists():
        meta = read_json(folder / "arch.json")
        return f"export:{folder}", {"teacher_arch": meta.get("arch"), "teacher_acc": meta.get("archval_acc")}
    torch.manual_seed(ctx.stage_seed("teacher"))
    model = space.build_supernet().child(arch, inherit=False).to(ctx.device)
    epochs = 1 if ctx.smoke else epochs
    spe = 2 if ctx.smoke else ctx.data.num_batches("train")
    total = spe * epochs
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ckpt = ctx.checkpoints
    ckpt.key = f"dnateacher{ckpt.key}"  # not "<key>-…": the trainer globs stage-<key>-*.pt
    start = 0
    saved = ckpt.load_latest()
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        start = int(saved["epoch"])
    bar = ctx.progress(total=total, initial=start * spe, desc="dna teacher")
    model.train()
    for epoch in range(start, epochs):
        for b, (x, y) in enumerate(ctx.data.batches("train", epoch=epoch, limit=spe, device=ctx.device)):
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(epoch * spe + b, total, "cosine")
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise diverged(f"the teacher's training loss became {float(loss)}", stage=ctx.stage_key,
                               step=epoch * spe + b, epoch=epoch, what="dna teacher", lr=lr,
                               lr_field=stage_field(ctx.stage_key, "trainer.options.teacher_lr"),
                               checkpoints=ckpt.directory)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ctx.allreduce_grads(model)  # every rank trains the same teacher on the global batch
            opt.step()
            bar.update(1)
            if not bar.disable and b % ctx.cfg.log_every == 0:
                bar.set_postfix({"loss": f"{float(loss.detach()):.3g}", "epoch": epoch})
        if not weights_finite(model):  # the last good checkpoint stays the newest
            raise diverged("the teacher's weights became non-finite", stage=ctx.stage_key, step=(epoch + 1) * spe - 1,
                           epoch=epoch, what="dna teacher", lr=lr, checkpoints=ckpt.directory,
                           lr_field=stage_field(ctx.stage_key, "trainer.options.teacher_lr"))
        ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1})
    bar.close()
    acc, _ = accuracy(model, ctx.data.batches("archval", shuffle=False, batch_size=ctx.data.eval_batch_size,
                                              drop_last=False, limit=2 if ctx.smoke else None, device=ctx.device,
                                              shard=False))
    facts = {"teacher_arch": space.format(arch), "teacher_acc": acc, "teacher_space": ref["name"]}
    ctx.log.event("dna_teacher", arch=space.format(arch), archval_acc=acc, epochs=epochs)
    if folder is None:
        _MEMORY[ctx] = Teacher(model, kind="child", source=f"in-run teacher {space.format(arch)}", space=space, arch=arch)
        return MEMORY, facts
    if ctx.dist.is_main:
        macs, params = table.cost(arch)
        save_torch(folder / "model.pt", {"model": model.state_dict()})
        write_json(folder / "arch.json", {
            "arch": space.format(arch), "ops": arch.to_json(), "macs": macs, "params": params,
            "space": ref, "input_shape": list(ctx.data.input_shape),
            "num_classes": ctx.data.num_classes, "weights": "dna teacher (trained in the run)", "archval_acc": acc,
        })
    if ctx.dist.enabled:
        torch.distributed.barrier()
    return f"export:{folder}", facts
