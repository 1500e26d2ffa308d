"""The zero-cost proxies as plain functions of a network and a batch (no nascore objects).

Each function takes a *disposable* network: it may change it in place (switch BatchNorm off,
convert it to float64, take absolute weights), so the evaluators hand it a fresh child. All return
a Python float where higher is meant to be better; a score the formula leaves undefined (a
constant Jacobian row, a singular NASWOT kernel) is ``-inf``, so it ranks last — where the
reference code's ``nanargmax`` leaves it.

Which layers are scored: the weights of every convolution (``nn.Conv1d/2d/3d``) and ``nn.Linear``,
as the reference implementations' ``get_layer_metric_array`` (Conv2d and Linear; identical on 2-D
networks). Biases and normalisation parameters are not scored. Formulas, papers and the reference
files are in the plugin README.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


def scored_layers(net: nn.Module) -> list[nn.Module]:
    """The convolution and linear layers whose weights the proxies score, in module order."""
    return [m for m in net.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in scored_layers(net)]


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params (zeros for a parameter the loss does not reach)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    net.train()
    return F.cross_entropy(net(x), y)


def disable_batchnorm(net: nn.Module) -> None:
    """Make every BatchNorm layer the identity (the reference's ``bn=False`` copy for synflow)."""
    for m in net.modules():
        if isinstance(m, NORM_TYPES):
            m.forward = _identity  # type: ignore[method-assign]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def synflow(net: nn.Module, input_shape: tuple[int, ...], bn: bool = False) -> float:
    """SynFlow (Tanaka et al. 2020; as a proxy: Abdelfattah et al. 2021).

    ``R = 1ᵀ f_|θ|(1)``: the summed output of the network with every weight and buffer replaced by
    its absolute value, BatchNorm switched off (unless ``bn``), in float64, on one all-ones input
    of ``input_shape``; the score is ``Σ |θ ⊙ ∂R/∂θ|`` over the conv/linear weights. Reads no data.
    """
    if not bn:
        disable_batchnorm(net)
    net.double()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    net.train()
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    weights = _weights(net)
    grads = _grads(net(x).sum(), weights)
    return _finite(float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads))))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP (Lee et al. 2019): ``Σ |∂L/∂θ ⊙ θ|`` over conv/linear weights, cross-entropy on one batch.

    The reference multiplies each weight by a mask of ones and takes ``|∂L/∂mask|``; at mask = 1
    that is the same number (``∂L/∂m = ∂L/∂θ ⊙ θ``).
    """
    weights = _weights(net)
    grads = _grads(_loss(net, x, y), weights)
    return _finite(float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads))))


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, per_layer: bool = True) -> float:
    """Gradient norm (Abdelfattah et al. 2021): ``Σ_l ‖∂L/∂W_l‖₂`` over conv/linear layers.

    The reference code sums the per-layer Euclidean norms (``per_layer``, the default); with
    ``per_layer=False`` the score is the norm of the whole gradient, ``sqrt(Σ_l ‖∂L/∂W_l‖²)``.
    """
    weights = _weights(net)
    norms = [g.norm() for g in _grads(_loss(net, x, y), weights)]
    if not norms:
        return 0.0
    total = torch.stack(norms).sum() if per_layer else torch.stack(norms).pow(2).sum().sqrt()
    return _finite(float(total))


def fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor, per_weight: bool = True) -> float:
    """Fisher (Theis et al. 2018; Turner et al. 2020; as a proxy: Abdelfattah et al. 2021).

    For each output channel ``k`` of every conv/linear layer with output activation ``a`` (before
    any BN) and ``g = ∂L/∂a``: ``Δ_k = ½ · mean_n (Σ_spatial a ⊙ g)²``. The score is ``Σ Δ_k``,
    each channel counted once per weight of that channel (``per_weight``, the reference code, which
    broadcasts a channel's value over its ``C_in·k·k`` weights before summing) or once
    (``per_weight=False``, the papers' per-channel saliency). A layer called more than once adds
    one term per call.
    """
    acts: list[tuple[nn.Module, torch.Tensor]] = []

    def keep(module: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
        acts.append((module, out))
        return out.clone()  # the rest of the net sees a copy: an in-place op after it cannot change `out`

    handles = [m.register_forward_hook(keep) for m in scored_layers(net)]
    try:
        loss = _loss(net, x, y)
    finally:
        for h in handles:
            h.remove()
    if not acts:
        return 0.0
    grads = _grads(loss, [a for _, a in acts])
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for (module, a), g in zip(acts, grads):
        prod = (a.detach() * g).double()
        per_sample = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
        delta = per_sample.pow(2).mean(0).mul(0.5)
        times = module.weight[0].numel() if per_weight else 1
        total = total + delta.sum() * times
    return _finite(float(total))


def jacobian(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows ``J_i = ∂(Σ_c f(x)_{i,c}) / ∂x_i``, flattened: one per image (``(N, C·H·W)``).

    As in both reference codes the network runs in training mode, so BatchNorm's batch statistics
    couple the images of the batch.
    """
    net.train()
    x = x.detach().clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(net(x).sum(), x)
    return jac.reshape(x.shape[0], -1)


def jacov_score(jac: torch.Tensor, eps: float = 1e-5) -> float:
    """``-Σ_i [log(λ_i + ε) + 1/(λ_i + ε)]`` over the eigenvalues λ of the rows' correlation matrix."""
    j = jac.detach().double()
    if j.shape[0] < 2:
        return -math.inf
    corr = torch.corrcoef(j)
    if not bool(torch.isfinite(corr).all()):
        return -math.inf
    lam = torch.linalg.eigvalsh((corr + corr.T) / 2)
    shifted = lam + eps
    if bool((shifted <= 0).any()):
        return -math.inf
    return _finite(float(-(shifted.log() + shifted.reciprocal()).sum()))


def jacov(net: nn.Module, x: torch.Tensor, eps: float = 1e-5) -> float:
    """Jacobian covariance (Mellor et al. 2020, arXiv 2006.04647v1): :func:`jacov_score` of
    :func:`jacobian` — highest when the images' input Jacobians are uncorrelated."""
    return jacov_score(jacobian(net, x), eps)


def is_relu(module: nn.Module) -> bool:
    """The modules NASWOT reads: the reference hooks every module whose type name contains 'ReLU'."""
    return "ReLU" in type(module).__name__


def naswot_kernel(net: nn.Module, x: torch.Tensor, select: Callable[[nn.Module], bool] = is_relu) -> torch.Tensor:
    """``K = Σ_layers [c cᵀ + (1-c)(1-c)ᵀ]`` with ``c_i`` the binary code (input > 0) of image ``i``
    at each ReLU: ``K_ij = N_A - d_H(c_i, c_j)``, the number of units on which two images agree."""
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64, device=x.device)

    def count(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal kernel
        c = (inp[0].detach().reshape(n, -1) > 0).double()
        kernel = kernel + c @ c.T + (1 - c) @ (1 - c).T

    handles = [m.register_forward_hook(count) for m in net.modules() if select(m)]
    try:
        net.train()
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return kernel


def naswot(net: nn.Module, x: torch.Tensor) -> float:
    """NASWOT (Mellor et al. 2021, ICML): ``log |det K|`` of :func:`naswot_kernel` (``-inf`` if
    singular, e.g. a network with no ReLU or two images with identical codes)."""
    sign, logdet = torch.linalg.slogdet(naswot_kernel(net, x))
    if float(sign) <= 0:
        return -math.inf
    return _finite(float(logdet))
