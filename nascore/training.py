"""What a GPU run needs from a training step: mixed precision, channels_last, weight EMA, accumulation.

Each feature is off by default and switched on by a trainer option (:class:`nascore.trainer.TrainerConfig`):

* ``amp: bf16`` — ``torch.autocast`` in bfloat16 (CPU or CUDA; no loss scaling needed);
  ``amp: fp16`` — float16 autocast with ``torch.amp.GradScaler`` loss scaling (CUDA only: float16
  autocast on a CPU is refused with a config error);
* ``channels_last`` — the supernet and each batch in NHWC memory format (faster convs on tensor cores);
* ``ema_decay`` — an exponential moving average of the weights and BN buffers
  (``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``); with ``ema_for_search``
  (Cream's code validates with its EMA model) the trained stage ends with the EMA weights in the
  supernet, so every later stage scores, exports and inherits them;
* ``grad_accum_steps: k`` — each batch runs as ``k`` micro-batches, backward after each, one
  optimizer step: the gradient of the ``data.batch_size`` batch (the paper's 1024) at 1/k of the
  activation memory (BatchNorm then sees micro-batch statistics, as with any accumulation).

All of it is checkpointed (the scaler's scale and the EMA weights), so a resumed run is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from nascore.errors import ConfigError


def _device_type(device: Any) -> str:
    return torch.device(device).type if device is not None else "cpu"


class TrainingFeatures:
    """The switched-on features of one trainer (see module docstring); cheap no-ops when off."""

    def __init__(self, cfg: Any, net: nn.Module | None = None, device: Any = "cpu") -> None:
        self.amp: str = getattr(cfg, "amp", "off")
        self.channels_last: bool = bool(getattr(cfg, "channels_last", False))
        self.accum: int = int(getattr(cfg, "grad_accum_steps", 1) or 1)
        self.ema_decay: float | None = getattr(cfg, "ema_decay", None)
        self.ema_for_search: bool = bool(getattr(cfg, "ema_for_search", True))
        self.device_type = _device_type(device)
        if self.amp == "fp16" and self.device_type != "cuda":
            raise ConfigError([f"trainer option amp: fp16 needs a CUDA device (this run uses {self.device_type}); "
                               "use amp: bf16 on a CPU, or device: cuda"], source="trainer options")
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if net is not None:
            self.attach(net)

    @property
    def active(self) -> bool:
        return self.amp != "off" or self.channels_last or self.accum > 1 or self.ema_decay is not None

    def attach(self, net: nn.Module) -> None:
        """Put the supernet in the chosen memory format and start its EMA copy."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.ema_decay is not None and self.ema is None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(float(self.ema_decay)), use_buffers=True)

    # -- the step ----------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)

    def micro_batches(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        k = min(self.accum, x.shape[0])
        yield from zip(x.chunk(k), y.chunk(k))

    def loss(
        self, compute: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        x: torch.Tensor, y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the batch through ``compute`` with the features applied.

        With accumulation, every micro-batch but the last is backpropagated here (weighted by its
        share of the batch); the returned loss has the batch's mean value and, on ``backward``,
        adds the last micro-batch's share — so the caller's one ``backward`` completes the batch's
        gradient, and a non-finite loss in any micro-batch makes the returned value non-finite.
        """
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.accum <= 1:
            with self.autocast():
                loss, logits = compute(x, y)
            return loss.float(), logits
        parts = list(self.micro_batches(x, y))
        n = x.shape[0]
        done = torch.zeros((), device=x.device)
        outs = []
        for i, (xi, yi) in enumerate(parts):
            with self.autocast():
                li, logits_i = compute(xi, yi)
            share = li.float() * (xi.shape[0] / n)
            outs.append(logits_i.detach() if i < len(parts) - 1 else logits_i)
            if i < len(parts) - 1:
                self.backward(share)
                done = done + share.detach()
            else:
                return done + share, torch.cat(outs)
        raise AssertionError("unreachable")  # pragma: no cover

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        """Before gradient clipping: clip the true gradients, not the scaled ones."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer, net: nn.Module) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        if self.ema is not None:
            self.ema.update_parameters(net)

    def finish(self, net: nn.Module) -> bool:
        """End of the stage: load the EMA weights into ``net`` if the search should use them."""
        if self.ema is None or not self.ema_for_search:
            return False
        with torch.no_grad():
            net.load_state_dict(self.ema.module.state_dict())
        return True

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            out["ema"] = self.ema.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any], where: str) -> None:
    """``opt.load_state_dict(saved)``, refusing a state that does not fit ``opt``'s parameters.

    torch matches optimizer state to parameters by position and checks only the group sizes, so a
    checkpoint written by another version of a space (parameters reordered or resized) would load
    momentum buffers onto the wrong tensors: silently wrong when the shapes happen to agree, a
    traceback inside ``step()`` when they do not. Every per-parameter tensor must have its
    parameter's shape, and a mismatch is a :class:`~nascore.errors.CheckpointError` naming ``where``.
    """
    from nascore.errors import CheckpointError

    hint = ("the checkpoint was written by another version of nascore, a plugin or the space's options; "
            "resume with the version that wrote it, or start the run again (--overwrite)")
    try:
        opt.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{where}: optimizer state does not fit this model: {e}", hint=hint) from None
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for name, value in opt.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise CheckpointError(
                    f"{where}: optimizer state {name!r} of parameter {i} has shape {tuple(value.shape)}, "
                    f"the parameter {tuple(p.shape)}", hint=hint)
