"""Each proxy against a hand computation on a toy network with fixed weights.

The expected values below are derived on paper (comments give the derivation), not by running the
proxy code another way, so a formula error (a missing absolute value, a forgotten layer, BN left on
in synflow, the wrong eigen-shift in jacov, codes taken after instead of across layers in NASWOT)
changes the number.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nascore_zerocost import measures

torch.set_num_threads(1)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def linear(weight: list[list[float]], bias: bool = False) -> nn.Linear:
    w = torch.tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias:
            layer.bias.fill_(-5.0)
    return layer


# -- synflow ------------------------------------------------------------------------------------
def test_synflow_two_layer_linear_by_hand() -> None:
    # |W1| = [[1, 2], [3, .5]], |W2| = [[2, 1]]; all-ones input x = [1, 1].
    # h = |W1| x = [3, 3.5] (ReLU keeps it); R = |W2| h = 6 + 3.5 = 9.5.
    # layer 2: Σ |W2 ⊙ ∂R/∂W2| = Σ |W2|_i h_i = 9.5; layer 1: ∂R/∂W1_ij = |W2|_i x_j, so
    # Σ |W1|_ij |W2|_i = 3·2 + 3.5·1 = 9.5. Total 19 (a linear chain gives R per layer).
    # Negative weights and a BatchNorm in between: synflow takes |θ| and switches BN off.
    net = nn.Sequential(linear([[1.0, -2.0], [3.0, 0.5]]), nn.BatchNorm1d(2), nn.ReLU(), linear([[-2.0, 1.0]]))
    assert measures.synflow(net, (2,)) == pytest.approx(19.0, rel=1e-12)


def test_synflow_ignores_biases_in_the_score_but_not_in_the_flow() -> None:
    # One layer with bias b = -5: |b| = 5 flows, R = |w|·1 + 5 = 2 + 5; score = |w ⊙ ∂R/∂w| = 2·1 = 2
    net = nn.Sequential(linear([[2.0]], bias=True))
    assert measures.synflow(net, (1,)) == pytest.approx(2.0)
    # a second layer after it: h = 7, R = 3·7 = 21; layer 2: 3·7 = 21, layer 1: 2·3 = 6 -> 27
    net = nn.Sequential(linear([[2.0]], bias=True), linear([[-3.0]]))
    assert measures.synflow(net, (1,)) == pytest.approx(27.0)


def test_synflow_runs_in_double_precision() -> None:
    # 40 layers of weight 10: R = 1e40 overflows float32 (max 3.4e38); float64 gives 40 · 1e40
    net = nn.Sequential(*[linear([[10.0]]) for _ in range(40)])
    assert measures.synflow(net, (1,)) == pytest.approx(40 * 1e40, rel=1e-9)


# -- snip, grad_norm, fisher ------------------------------------------------------------------------
# One linear layer W = [[.5, -1], [2, .25]], x = [1, 2], label 0:
# z = W x = [-1.5, 2.5], p = softmax(z), p1 = sigmoid(4); ∂L/∂z = p - e0 = [-p1, p1];
# ∂L/∂W = (p - e0) xᵀ = [[-p1, -2 p1], [p1, 2 p1]].
W = [[0.5, -1.0], [2.0, 0.25]]
X = torch.tensor([[1.0, 2.0]])
Y = torch.tensor([0])
P1 = sigmoid(4.0)


def test_snip_one_layer_by_hand() -> None:
    # Σ |g ⊙ W| = p1 (.5 + 2 + 2 + .5) = 5 p1
    assert measures.snip(nn.Sequential(linear(W)), X, Y) == pytest.approx(5 * P1, rel=1e-5)


def test_grad_norm_one_layer_by_hand() -> None:
    # ‖g‖ = p1 sqrt(1 + 4 + 1 + 4)
    assert measures.grad_norm(nn.Sequential(linear(W)), X, Y) == pytest.approx(P1 * math.sqrt(10), rel=1e-5)


def _two_layer() -> nn.Module:
    # w1 = 2 (1 -> 1), w2 = [[1], [-1]] (1 -> 2 classes); x = 1, label 0.
    return nn.Sequential(linear([[2.0]]), linear([[1.0], [-1.0]]))


S = sigmoid(-4.0)  # h = 2, z = [2, -2], ∂L/∂z = [σ(4) - 1, σ(-4)] = s [-1, 1]


def test_snip_and_grad_norm_two_layers_by_hand() -> None:
    # ∂L/∂w2 = s [-1, 1] · h = s [-2, 2]; ∂L/∂h = w2ᵀ ∂L/∂z = -2 s; ∂L/∂w1 = -2 s · x = -2 s
    x, y = torch.tensor([[1.0]]), torch.tensor([0])
    # snip: |(-2s)·2| + |(-2s)·1| + |(2s)·(-1)| = 8 s
    assert measures.snip(_two_layer(), x, y) == pytest.approx(8 * S, rel=1e-5)
    # per-layer norms 2 s and 2√2 s: the reference sums them; the whole gradient's norm is 2√3 s
    assert measures.grad_norm(_two_layer(), x, y) == pytest.approx(2 * S * (1 + math.sqrt(2)), rel=1e-5)
    assert measures.grad_norm(_two_layer(), x, y, per_layer=False) == pytest.approx(2 * math.sqrt(3) * S, rel=1e-5)


def test_fisher_linear_by_hand() -> None:
    # activation a = z = [-1.5, 2.5], g = [-p1, p1]: Δ_k = ½ (a_k g_k)² -> ½ p1² (2.25 + 6.25)
    per_channel = 0.5 * P1**2 * (2.25 + 6.25)
    assert measures.fisher(nn.Sequential(linear(W)), X, Y, per_weight=False) == pytest.approx(per_channel, rel=1e-5)
    # the reference broadcasts each channel's value over its 2 input weights before summing
    assert measures.fisher(nn.Sequential(linear(W)), X, Y) == pytest.approx(2 * per_channel, rel=1e-5)


class MeanLogits(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def test_fisher_sums_over_spatial_positions_by_hand() -> None:
    # 1x1 conv, 1 -> 2 channels, w = [1, -1], on a 1x2 image [1, 3]; logits = spatial mean.
    # act0 = [1, 3], act1 = [-1, -3], z = [2, -2], ∂L/∂z = s [-1, 1] (label 0), ∂L/∂act_k = ∂L/∂z_k / 2.
    # Σ_s act·g: ch0 = 4 · (-s/2) = -2 s, ch1 = -4 · (s/2) = -2 s; Δ_k = ½ (2 s)² = 2 s²; total 4 s².
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    net = nn.Sequential(conv, MeanLogits())
    x = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    assert measures.fisher(net, x, torch.tensor([0])) == pytest.approx(4 * S**2, rel=1e-5)


# -- jacov and naswot: a ReLU net with known Jacobians and codes ------------------------------------
def _relu_sum(relus: int = 1) -> nn.Module:
    """f(x) = Σ_d relu(x_d): J_i = 1[x_i > 0], code at every ReLU = 1[x_i > 0]."""
    head = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(*[nn.ReLU() for _ in range(relus)], head)


X1 = [1.0, 1.0, -1.0, -1.0]   # J = code = [1, 1, 0, 0]
X2 = [1.0, -1.0, 1.0, -1.0]   # [1, 0, 1, 0]
X3 = [1.0, 1.0, 1.0, -1.0]    # [1, 1, 1, 0]


def f_jacov(lams: list[float], k: float = 1e-5) -> float:
    return -sum(math.log(v + k) + 1 / (v + k) for v in lams)


def test_jacov_uncorrelated_jacobians_by_hand() -> None:
    # J1 = [1,1,0,0], J2 = [1,0,1,0]: centred [.5,.5,-.5,-.5]·[.5,-.5,.5,-.5] = 0 -> C = I, λ = {1, 1}
    x = torch.tensor([X1, X2])
    assert measures.jacov(_relu_sum(), x) == pytest.approx(f_jacov([1.0, 1.0]), rel=1e-9)


def test_jacov_correlated_jacobians_by_hand() -> None:
    # J1 = [1,1,0,0], J3 = [1,1,1,0]: corr = .5 / sqrt(1 · .75) = 1/√3 -> λ = 1 ± 1/√3
    x = torch.tensor([X1, X3])
    r = 1 / math.sqrt(3)
    assert measures.jacov(_relu_sum(), x) == pytest.approx(f_jacov([1 + r, 1 - r]), rel=1e-9)
    # identical Jacobians: λ = {2, 0}; the ε keeps log(0) finite, as the reference's k = 1e-5
    same = torch.tensor([X1, [2.0, 3.0, -1.0, -4.0]])
    assert measures.jacov(_relu_sum(), same) == pytest.approx(f_jacov([2.0, 0.0]), rel=1e-5)
    assert measures.jacov(_relu_sum(), same, eps=1e-3) == pytest.approx(f_jacov([2.0, 0.0], 1e-3), rel=1e-5)


def test_jacov_undefined_for_a_constant_jacobian_row() -> None:
    # all inputs negative: J_1 = 0 (zero variance) -> correlation undefined -> ranks last
    x = torch.tensor([[-1.0] * 4, X1])
    assert measures.jacov(_relu_sum(), x) == -math.inf


def test_naswot_kernel_and_logdet_by_hand() -> None:
    # codes c1 = [1,1,0,0], c2 = [1,0,1,0], c3 = [1,1,1,0]; K_ij = N_A - d_H = 4 - d_H:
    # d(1,2) = 2, d(1,3) = 1, d(2,3) = 1 -> K = [[4,2,3],[2,4,3],[3,3,4]], det = 28 + 2 - 18 = 12
    x = torch.tensor([X1, X2, X3])
    expected = torch.tensor([[4.0, 2.0, 3.0], [2.0, 4.0, 3.0], [3.0, 3.0, 4.0]], dtype=torch.float64)
    assert torch.equal(measures.naswot_kernel(_relu_sum(), x), expected)
    assert measures.naswot(_relu_sum(), x) == pytest.approx(math.log(12.0), rel=1e-12)
    # two ReLU layers with the same codes: K doubles, det × 2³ = 96
    assert measures.naswot(_relu_sum(relus=2), x) == pytest.approx(math.log(96.0), rel=1e-12)


def test_naswot_singular_kernel_ranks_last() -> None:
    # two images with the same code: two equal rows of K -> det 0
    x = torch.tensor([X1, [2.0, 5.0, -3.0, -1.0]])
    assert measures.naswot(_relu_sum(), x) == -math.inf
    # no ReLU at all: K = 0
    assert measures.naswot(nn.Sequential(nn.Linear(4, 2)), torch.tensor([X1, X2])) == -math.inf
