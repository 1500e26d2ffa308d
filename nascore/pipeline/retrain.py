"""Retrain chosen architectures as standalone networks and measure them on held-out data.

Each retrained model is trained on the train and val splits and scored on the dataset's test split
(or ``archval`` when the dataset has none). Progress is checkpointed every epoch so a kill loses at
most one epoch; the weights land in ``retrain/<rank>/model.pt`` and the accuracy in results.json.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nascore.config import RetrainStage
from nascore.evaluate import accuracy
from nascore.io import save_torch
from nascore.pipeline.runfolder import load_state_into
from nascore.pipeline.stages import option_path
from nascore.roles import Context
from nascore.trainer import diverged, distiller_lr_factor, lr_factor, stage_field, weights_finite
from nascore.training import load_optimizer_state


def retrain_candidates(ctx: Context, stage: RetrainStage, key: str) -> None:
    """Retrain the stage's top candidates (those not retrained yet); results go to ``ctx.state``."""
    results = ctx.state.setdefault("retrain", {})
    for i in range(min(stage.top, len(ctx.candidates))):
        cand = ctx.candidates[i]
        if cand.arch_str in results:
            continue
        results[cand.arch_str] = retrain_one(ctx, stage, i)
        ctx.write_state()


def _diverged(ctx: Context, stage: RetrainStage, index: int, what: str, step: int, epoch: int) -> Exception:
    return diverged(what, stage=ctx.stage_key, step=step, epoch=epoch, what=f"retrain #{index}",
                    lr_field=stage_field(ctx.stage_key, "lr"), lr=stage.lr, checkpoints=ctx.checkpoints.directory)


def retrain_one(ctx: Context, stage: RetrainStage, index: int) -> dict[str, float]:
    """Retrain candidate ``index`` as a standalone child; its test accuracy and loss."""
    cand = ctx.candidates[index]
    torch.manual_seed(ctx.stage_seed(f"retrain{index}"))
    child = ctx.supernet.child(cand.arch, inherit=stage.inherit).to(ctx.device)
    epochs = 1 if ctx.smoke else stage.epochs
    split = "train"
    data = ctx.data.with_true_labels()  # real labels even after a random-label (RLNAS) search
    spe = 2 if ctx.smoke else data.num_batches(split)
    total = spe * epochs
    opt = torch.optim.SGD(child.parameters(), lr=stage.lr, momentum=0.9, nesterov=True, weight_decay=stage.weight_decay)
    ckpt = ctx.checkpoints
    ckpt.key = f"{ckpt.key}-retrain{index}"
    start_epoch = 0
    saved = ckpt.load_latest()
    if saved is not None:
        where = f"stage {ctx.stage_key} retrain checkpoint"
        load_state_into(child, saved, where, key="model", what="retrained model")
        load_optimizer_state(opt, saved["optimizer"], where)
        torch.set_rng_state(saved["torch_rng"])
        start_epoch = int(saved["epoch"])
    distiller = None
    if stage.distiller:
        distiller = ctx.build("distiller", stage.distiller, option_path(ctx.cfg, ctx.stage_key, "distiller"))
    if distiller is not None and hasattr(distiller, "bind_student"):
        distiller.bind_student(child)  # feature distillers read the student's internals
    bar = ctx.progress(total=total, initial=start_epoch * spe, desc=f"retrain #{index}")
    child.train()
    for epoch in range(start_epoch, epochs):
        for b, (x, y) in enumerate(data.batches(split, epoch=epoch, limit=spe, device=ctx.device)):
            step = epoch * spe + b
            factor = distiller_lr_factor(distiller, step, total)
            if factor is None:
                factor = lr_factor(step, total, "cosine")
            for g in opt.param_groups:
                g["lr"] = stage.lr * factor
            logits = child(x)
            loss = F.cross_entropy(logits, y)
            if distiller is not None:
                kd = distiller.loss(logits, x, y, cand.arch, ctx, None)
                loss = kd if getattr(distiller, "replaces_ce", False) else loss + kd
            if not torch.isfinite(loss):  # a sync per step; a retrain is short next to its forward/backward
                ctx.log.event("nan", stage=ctx.stage_key, index=index, step=step, loss=float(loss.detach()))
                raise _diverged(ctx, stage, index, f"the training loss became {float(loss.detach())}", step, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ctx.allreduce_grads(child)
            opt.step()
            bar.update(1)
            if step % ctx.cfg.log_every == 0:  # .item() syncs a GPU: not every step
                value = float(loss.detach())
                ctx.log.metric("retrain_step", index=index, step=step, epoch=epoch, loss=value)  # the report's curve
                if not bar.disable:
                    bar.set_postfix({"loss": f"{value:.3g}", "epoch": epoch})
        if not weights_finite(child):  # never replace the last good checkpoint with diverged weights
            raise _diverged(ctx, stage, index, "the weights became non-finite", (epoch + 1) * spe - 1, epoch)
        ckpt.save({"model": child.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                   "torch_rng": torch.get_rng_state()})
        ctx.log.metric("retrain", index=index, epoch=epoch, loss=float(loss.detach()))
    bar.close()
    eval_split = "test" if data.spec.test is not None else "archval"
    acc, loss = accuracy(child, data.batches(eval_split, shuffle=False, batch_size=data.eval_batch_size,
                                                drop_last=False, limit=2 if ctx.smoke else None, device=ctx.device,
                                                shard=False))
    if not (math.isfinite(acc) and math.isfinite(loss)):
        raise _diverged(ctx, stage, index, f"the test loss is {loss} after training", total - 1, epochs - 1)
    if ctx.run_dir is not None and ctx.dist.is_main:
        save_torch(ctx.run_dir / "retrain" / f"{index}" / "model.pt", {"model": child.state_dict()})
    out = {"test_acc": acc, "test_loss": loss, "epochs": epochs, "split": eval_split, "inherit": stage.inherit}
    ctx.log.metric("retrain_result", index=index, arch=cand.arch_str, **out)
    return out
