"""Width as a decision: slimmable layers that run the first ``c`` channels of max-width weights.

A width decision (:class:`nascore.space.WidthDecision`) has channel counts as options (``"48"``).
A supernet builds its width-searched layers from the modules here, at the largest width, and tells
each one which decision sets its input and output width (``in_source`` / ``out_source``: a
decision index, or ``None`` for a fixed width). ``Supernet.set_active`` then sets every slim
module's active widths, and the forward pass slices the leading channels of the shared weights —
the slimmable-network/SPOS-channel-search weight sharing. A decision may set the output width of
one layer and the input width of the next (the next block's input channels change with it).
A module may also run a fixed multiple of its decision's width (``in_scale`` / ``out_scale`` /
``scale``, an int): one decision setting ``k`` channels before a downsampling and ``2k`` after it
(slimmable networks, PWKD's ``slimmable_chain``).

BatchNorm comes in two kinds, because methods differ:

* :class:`SlimBatchNorm2d` slices one max-width BN (its statistics are shared across widths, so an
  evaluator recalibrates them per candidate — SPOS's BN recalibration does exactly that);
* :class:`SwitchableBatchNorm2d` keeps one BN per width (slimmable networks, PWKD's teacher). Its
  BNs are *per-option parameters* of the width decision (:meth:`SlimModule.option_parameters`):
  ``Supernet.active_parameters(arch)`` holds only the chosen width's BNs, and grad clearing clears
  the others', as for the unchosen candidates of an op decision.

Children are plain networks: :func:`materialize` replaces every slim module by the ``nn.Conv2d`` /
``nn.BatchNorm2d`` / ``nn.Linear`` of its active widths, holding only those channels (copied
weights and statistics), so the child's output equals the supernet path's (eval mode) and fvcore
counts the child as the standalone network it is.

Costs: each slim module's MACs and params are polynomials of its active widths (a dense conv or
linear layer is bilinear in (in, out), a depthwise conv and a BN linear in their one width), which
:meth:`cost_terms` states; :mod:`nascore.cost` calibrates the MACs coefficient with one fvcore trace
at the largest width and checks the whole table against fvcore on children.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nascore.errors import NascoreError

#: A cost monomial: ``coef * prod(width of each source decision)``.
Monomial = tuple[int, tuple[int, ...]]


class SlimModule:
    """Mixin of the slimmable modules: where their widths come from and what they cost."""

    in_source: int | None
    out_source: int | None

    def set_width(self, decision: int, channels: int) -> None:  # pragma: no cover - abstract
        """Set the widths that ``decision`` sources to ``channels`` (the decision's count, before any scale)."""
        raise NotImplementedError

    def factors(self, active: bool = True) -> tuple[tuple[int, int], ...]:
        """``(decision, width)`` per factor of the MACs (active or built widths, scales applied)."""
        raise NotImplementedError  # pragma: no cover

    def width_scales(self) -> tuple[int, ...]:
        """The multiple of its decision's channels each factor runs (aligned with :meth:`sources`)."""
        return tuple(1 for _ in self.factors(active=False))

    def sources(self) -> tuple[int, ...]:
        """The decisions whose widths change this module's MACs (one factor each, repeats allowed)."""
        return tuple(d for d, _ in self.factors(active=False))

    def option_parameters(self) -> dict[str, tuple[nn.Parameter, ...]]:
        """Parameters that belong to one option of the source decision (per-width BN), by option."""
        return {}

    def param_terms(self) -> list[Monomial]:
        raise NotImplementedError  # pragma: no cover

    def to_plain(self) -> nn.Module:
        raise NotImplementedError  # pragma: no cover


def _check_scale(name: str, scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise NascoreError(f"{name}: width scale {scale!r} must be a positive integer",
                           hint="a slim module runs an integer multiple of its decision's channels (2 after a downsampling)")
    return int(scale)


def _check_width(name: str, channels: int, maximum: int) -> int:
    if not 1 <= channels <= maximum:
        raise NascoreError(f"{name}: width {channels} is outside 1..{maximum} (the layer's max width)",
                           hint="a width decision's options must not exceed the channels the supernet was built with")
    return int(channels)


class SlimConv2d(nn.Conv2d, SlimModule):
    """A conv whose first ``active_in`` input and ``active_out`` output channels run.

    ``depthwise=True`` makes a depthwise conv (groups = channels) whose one width comes from
    ``in_source`` (== ``out_source``). ``in_scale``/``out_scale``: run that multiple of the source
    decision's channels. Built at the largest widths; state-dict keys are those of ``nn.Conv2d``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, *,
        bias: bool = False, depthwise: bool = False, in_source: int | None = None, out_source: int | None = None,
        in_scale: int = 1, out_scale: int = 1,
    ) -> None:
        in_scale, out_scale = _check_scale("SlimConv2d", in_scale), _check_scale("SlimConv2d", out_scale)
        if depthwise:
            if in_channels != out_channels:
                raise NascoreError("a depthwise SlimConv2d needs in_channels == out_channels")
            source = in_source if in_source is not None else out_source
            in_scale = out_scale = in_scale if in_source is not None else out_scale
            in_source = out_source = source
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=bias,
                         groups=in_channels if depthwise else 1)
        self.depthwise = depthwise
        self.in_source = in_source
        self.out_source = out_source
        self.in_scale, self.out_scale = in_scale, out_scale
        self.active_in = in_channels
        self.active_out = out_channels

    def set_width(self, decision: int, channels: int) -> None:
        if decision == self.in_source:
            self.active_in = _check_width("SlimConv2d input", channels * self.in_scale, self.in_channels)
        if decision == self.out_source:
            self.active_out = _check_width("SlimConv2d output", channels * self.out_scale, self.out_channels)

    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        cin, cout = self.active_in, self.active_out
        if self.depthwise:
            w = self.weight if cout == self.out_channels else self.weight[:cout]
            groups = cout
        else:
            full = cin == self.in_channels and cout == self.out_channels
            w = self.weight if full else self.weight[:cout, :cin]
            groups = 1
        b = None if self.bias is None else (self.bias if cout == self.out_channels else self.bias[:cout])
        return w, b, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, groups = self._sliced()
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, groups)

    def factors(self, active: bool = True) -> tuple[tuple[int, int], ...]:
        cin, cout = (self.active_in, self.active_out) if active else (self.in_channels, self.out_channels)
        if self.depthwise:
            return () if self.in_source is None else ((self.in_source, cout),)
        return tuple((s, w) for s, w in ((self.in_source, cin), (self.out_source, cout)) if s is not None)

    def width_scales(self) -> tuple[int, ...]:
        if self.depthwise:
            return () if self.in_source is None else (self.in_scale,)
        return tuple(sc for s, sc in ((self.in_source, self.in_scale), (self.out_source, self.out_scale))
                     if s is not None)

    def param_terms(self) -> list[Monomial]:
        k = self.kernel_size[0] * self.kernel_size[1]
        per_out = self.out_channels if self.out_source is None else self.out_scale  # output channels per unit width
        per_in = 1 if self.depthwise else (self.in_channels if self.in_source is None else self.in_scale)
        terms: list[Monomial] = [(k * per_in * per_out, self.sources())]
        if self.bias is not None:
            terms.append((per_out, () if self.out_source is None else (self.out_source,)))
        return terms

    def to_plain(self) -> nn.Conv2d:
        w, b, groups = self._sliced()
        cin = w.shape[1] * groups
        plain = nn.Conv2d(cin, w.shape[0], self.kernel_size, self.stride, self.padding, self.dilation, groups,
                          bias=b is not None).to(w.device, w.dtype)
        with torch.no_grad():
            plain.weight.copy_(w)
            if b is not None:
                plain.bias.copy_(b)
        return plain


class SlimBatchNorm2d(nn.BatchNorm2d, SlimModule):
    """A BatchNorm over the first ``active`` channels of one max-width BN (statistics shared).

    Same training/eval/momentum semantics as ``nn.BatchNorm2d`` (including ``momentum=None``,
    the cumulative average BN recalibration uses), on the sliced weight, bias and statistics.
    ``scale``: run that multiple of the source decision's channels.
    """

    def __init__(self, num_features: int, *, source: int | None = None, affine: bool = True, scale: int = 1) -> None:
        super().__init__(num_features, affine=affine)
        self.in_source = self.out_source = source
        self.scale = _check_scale("SlimBatchNorm2d", scale)
        self.active = num_features

    def set_width(self, decision: int, channels: int) -> None:
        if decision == self.in_source:
            self.active = _check_width("SlimBatchNorm2d", channels * self.scale, self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.active
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x, self.running_mean[:c] if track and self.running_mean is not None else None,
            self.running_var[:c] if track and self.running_var is not None else None,
            None if self.weight is None else self.weight[:c], None if self.bias is None else self.bias[:c],
            use_batch, factor, self.eps)

    def factors(self, active: bool = True) -> tuple[tuple[int, int], ...]:
        return () if self.in_source is None else ((self.in_source, self.active if active else self.num_features),)

    def width_scales(self) -> tuple[int, ...]:
        return () if self.in_source is None else (self.scale,)

    def param_terms(self) -> list[Monomial]:
        if not self.affine:
            return []
        return [(2 * self.scale if self.in_source is not None else 2 * self.num_features, self.sources())]

    def to_plain(self) -> nn.BatchNorm2d:
        c = self.active
        plain = nn.BatchNorm2d(c, self.eps, self.momentum, self.affine, self.track_running_stats)
        plain = plain.to(self.running_mean.device if self.running_mean is not None else "cpu")
        with torch.no_grad():
            if self.affine:
                plain.weight.copy_(self.weight[:c])
                plain.bias.copy_(self.bias[:c])
            if self.track_running_stats:
                plain.running_mean.copy_(self.running_mean[:c])
                plain.running_var.copy_(self.running_var[:c])
                plain.num_batches_tracked.copy_(self.num_batches_tracked)
        plain.train(self.training)
        return plain


class SwitchableBatchNorm2d(nn.Module, SlimModule):
    """One BatchNorm per width (slimmable networks' switchable BN): widths never share statistics.

    ``widths`` are the channel counts the source decision may take (its options' channels, in
    order), ``labels`` its option names (default ``str(width)``, the options of a plain
    :class:`~nascore.space.WidthDecision`): the BN of option ``o`` is ``bns[o]``, with
    ``scale × width`` features, and the active option's BN runs. Each BN is a per-option parameter
    set of the decision (:meth:`option_parameters`), so a path's active parameters hold only its
    own width's BN and grad clearing clears the other widths'.
    """

    def __init__(self, widths: Sequence[int], *, source: int, affine: bool = True,
                 labels: Sequence[str] | None = None, scale: int = 1) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        labels = [str(w) for w in widths] if labels is None else [str(o) for o in labels]
        if len(labels) != len(widths) or len(set(widths)) != len(widths) or len(set(labels)) != len(labels):
            raise NascoreError(f"SwitchableBatchNorm2d needs distinct widths and one label each, got widths "
                               f"{widths} and labels {labels}", hint="pass the width decision's channels and options")
        self.scale = _check_scale("SwitchableBatchNorm2d", scale)
        self.widths = tuple(sorted(widths))
        self._labels = dict(zip(widths, labels))
        self.bns = nn.ModuleDict({o: nn.BatchNorm2d(w * self.scale, affine=affine) for w, o in zip(widths, labels)})
        self.in_source = self.out_source = source
        self.affine = affine
        self.active = self.widths[-1] * self.scale
        self.active_label = self._labels[self.widths[-1]]

    def set_width(self, decision: int, channels: int) -> None:
        if decision == self.in_source:
            if int(channels) not in self._labels:
                raise NascoreError(f"SwitchableBatchNorm2d has no BN for width {channels}",
                                   hint=f"its widths are {list(self.widths)}")
            self.active = int(channels) * self.scale
            self.active_label = self._labels[int(channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[self.active_label](x)

    def factors(self, active: bool = True) -> tuple[tuple[int, int], ...]:
        return ((self.in_source, self.active if active else self.widths[-1] * self.scale),)  # type: ignore[return-value]

    def width_scales(self) -> tuple[int, ...]:
        return (self.scale,)

    def param_terms(self) -> list[Monomial]:
        return [(2 * self.scale, self.sources())] if self.affine else []

    def option_parameters(self) -> dict[str, tuple[nn.Parameter, ...]]:
        return {o: tuple(bn.parameters()) for o, bn in self.bns.items()}

    def to_plain(self) -> nn.BatchNorm2d:
        return copy.deepcopy(self.bns[self.active_label])  # type: ignore[return-value]


class SlimLinear(nn.Linear, SlimModule):
    """A linear layer on the first ``active_in`` features, producing the first ``active_out``
    (``in_scale``/``out_scale``: that multiple of the source decision's channels)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 in_source: int | None = None, out_source: int | None = None,
                 in_scale: int = 1, out_scale: int = 1) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.in_source, self.out_source = in_source, out_source
        self.in_scale, self.out_scale = _check_scale("SlimLinear", in_scale), _check_scale("SlimLinear", out_scale)
        self.active_in, self.active_out = in_features, out_features

    def set_width(self, decision: int, channels: int) -> None:
        if decision == self.in_source:
            self.active_in = _check_width("SlimLinear input", channels * self.in_scale, self.in_features)
        if decision == self.out_source:
            self.active_out = _check_width("SlimLinear output", channels * self.out_scale, self.out_features)

    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.weight[: self.active_out, : self.active_in]
        return w, None if self.bias is None else self.bias[: self.active_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._sliced()
        return F.linear(x, w, b)

    def factors(self, active: bool = True) -> tuple[tuple[int, int], ...]:
        cin, cout = (self.active_in, self.active_out) if active else (self.in_features, self.out_features)
        return tuple((s, w) for s, w in ((self.in_source, cin), (self.out_source, cout)) if s is not None)

    def width_scales(self) -> tuple[int, ...]:
        return tuple(sc for s, sc in ((self.in_source, self.in_scale), (self.out_source, self.out_scale))
                     if s is not None)

    def param_terms(self) -> list[Monomial]:
        fixed_in = self.in_features if self.in_source is None else self.in_scale
        fixed_out = self.out_features if self.out_source is None else self.out_scale
        terms: list[Monomial] = [(fixed_in * fixed_out, self.sources())]
        if self.bias is not None:
            terms.append((fixed_out, () if self.out_source is None else (self.out_source,)))
        return terms

    def to_plain(self) -> nn.Linear:
        w, b = self._sliced()
        plain = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).to(w.device, w.dtype)
        with torch.no_grad():
            plain.weight.copy_(w)
            if b is not None:
                plain.bias.copy_(b)
        return plain


def slim_modules(model: nn.Module) -> list[tuple[str, SlimModule]]:
    """``(path, module)`` of every slimmable module whose width some decision sets."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SlimModule) and m.sources()]


def macs_scale(module: SlimModule) -> tuple[int, ...]:
    """The MACs factors of ``module`` at its *built* (max) widths, aligned with its sources."""
    return tuple(w for _, w in module.factors(active=False))


def macs_monomial(module: SlimModule, counted: int) -> Monomial | None:
    """``module``'s MACs as a monomial of its source decisions' channels, from ``counted`` (fvcore's
    count at the built widths); ``None`` if ``counted`` is not a multiple of the built widths' product.

    The count is ``c × Π(built width)``; a factor running ``scale × w`` channels of decision ``w``
    contributes ``scale`` to the coefficient, so the monomial is ``(c × Π scale, sources)``.
    """
    built = math.prod(macs_scale(module))
    if counted % built:
        return None
    return counted // built * math.prod(module.width_scales()), tuple(module.sources())


def active_widths(module: SlimModule) -> tuple[int, ...]:
    """The active width of each source of ``module`` (aligned with :meth:`SlimModule.sources`)."""
    return tuple(w for _, w in module.factors(active=True))


def materialize(model: nn.Module) -> nn.Module:
    """Replace, in place, every slim module of ``model`` by the plain module of its active widths."""
    for path, mod in list(model.named_modules()):
        if not isinstance(mod, SlimModule) or not path:
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        plain = mod.to_plain()
        plain.train(mod.training)  # type: ignore[attr-defined]
        parent._modules[attr] = plain
    return model
