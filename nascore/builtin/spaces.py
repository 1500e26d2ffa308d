"""Built-in search spaces, registered through the same hook as any plugin."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nascore.hookspecs import hookimpl


class TinyChainConfig(BaseModel):
    """Options of the ``tiny_chain`` test-bed space (4 layers × {conv3, conv5, skip})."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: int = Field(4, gt=0, le=256, description="number of choice layers")
    width: int = Field(8, gt=0, description="channels of the first half (doubled after)")


class TinyMatchedConfig(BaseModel):
    """Options of the ``tiny_matched`` cost-matched test bed (4 layers × {conv, dil, pool, lin})."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: int = Field(4, gt=0, le=256, description="number of choice layers")
    width: int = Field(8, gt=0, description="channels of the first half (doubled after)")


class MobileNetConfig(BaseModel):
    """Options of the ``mobilenet`` MBConv space (SPOS/Cream/NEAS/ABS).

    Defaults are a tiny 4-stage × 2-layer space for 28×28/32×32 CPU runs; Cream's ImageNet
    supernet is ``nascore.builtin.mobilenet.CREAM_IMAGENET``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    width_mult: float = Field(1.0, gt=0, description="width multiplier on stem/stage/last channels (rounded to multiples of 8 unless 1.0)")
    stem_channels: int = Field(8, gt=0, description="output channels of the 3x3 stem conv")
    stem_stride: int = Field(2, ge=1, le=2, description="stride of the stem conv")
    first_block_channels: int = Field(0, ge=0, description="channels of a fixed depthwise-separable block after the stem (Cream's stage 0: 16); 0 = none")
    stage_depths: tuple[int, ...] = Field((2, 2, 2, 2), min_length=1, description="choice layers per stage")
    stage_channels: tuple[int, ...] = Field((8, 16, 24, 32), min_length=1, description="output channels per stage")
    stage_strides: tuple[int, ...] = Field((1, 2, 2, 1), min_length=1, description="stride of the first layer of each stage (1 or 2)")
    stage_out_channels: tuple[int, ...] | None = Field(
        None, description="output channels of each stage's LAST layer (DNA's cells: the hidden width inside, the teacher "
        "block's width out; that layer then offers no skip); null: stage_channels")
    kernels: tuple[int, ...] = Field((3, 5, 7), min_length=1, description="depthwise kernel sizes of the MBConv ops")
    expansions: tuple[int, ...] = Field((4, 6), min_length=1, description="expansion ratios of the MBConv ops (ABS uses 3, 6)")
    allow_skip: bool = Field(True, description="offer 'skip' (identity) on every layer but the first of a stage")
    se: Literal["all", "late", "none"] = Field("all", description="squeeze-excitation in every block (Cream), only the later half of the stages (MobileNetV3) or none")
    se_ratio: float = Field(0.25, gt=0, le=1, description="SE reduction ratio (of the expanded channels, rounded to 8)")
    act: Literal["mbv3", "swish", "hswish", "relu"] = Field("mbv3", description="activation: mbv3 = ReLU early, hard-swish in the later stages and head; swish = Cream's code")
    last_channels: int = Field(64, ge=0, description="channels of the 1x1 conv after the last stage (Cream: 320); 0 = none")
    head_channels: int = Field(128, ge=0, description="channels of the 1x1 head conv after pooling (Cream: 1280); 0 = none")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")
    bn_affine: bool = Field(True, description="learnable BatchNorm scale/shift")

    @model_validator(mode="after")
    def _stages_agree(self) -> "MobileNetConfig":
        n = {len(self.stage_depths), len(self.stage_channels), len(self.stage_strides)}
        if len(n) != 1:
            raise ValueError("stage_depths, stage_channels and stage_strides must have the same length")
        if self.stage_out_channels is not None and (len(self.stage_out_channels) != len(self.stage_depths)
                                                    or any(c < 1 for c in self.stage_out_channels)):
            raise ValueError("stage_out_channels needs one positive channel count per stage (or null)")
        if any(d < 1 for d in self.stage_depths) or any(c < 1 for c in self.stage_channels):
            raise ValueError("stage depths and channels must be positive")
        if any(s not in (1, 2) for s in self.stage_strides):
            raise ValueError("stage_strides must be 1 or 2")
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError("kernels must be odd and positive")
        if any(e < 1 for e in self.expansions):
            raise ValueError("expansions must be positive")
        return self


class ShuffleNetConfig(BaseModel):
    """Options of the ``shufflenet`` SPOS block space (20 layers × 4 ShuffleNetV2/Xception blocks).

    Defaults are small for 28×28/32×32 CPU runs; the paper's supernet is
    ``nascore.builtin.shufflenet.SPOS_IMAGENET``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    width_mult: float = Field(1.0, gt=0, description="width multiplier on stage and last channels (rounded to multiples of 4)")
    stem_channels: int = Field(16, gt=0, description="output channels of the 3x3 stem conv")
    stem_stride: int = Field(1, ge=1, le=2, description="stride of the stem conv (SPOS ImageNet: 2)")
    maxpool: bool = Field(False, description="3x3/2 max-pool after the stem (not in SPOS; ShuffleNetV2 has one)")
    stage_depths: tuple[int, ...] = Field((4, 4, 8, 4), min_length=1, description="choice layers per stage; the first of each has stride 2")
    stage_channels: tuple[int, ...] = Field((24, 48, 96, 192), min_length=1, description="output channels per stage, increasing multiples of 4 (SPOS: 64,160,320,640)")
    last_channels: int = Field(256, gt=0, description="channels of the 1x1 conv before pooling (SPOS: 1024)")
    ops: tuple[Literal["shuffle3", "shuffle5", "shuffle7", "xception"], ...] = Field(
        ("shuffle3", "shuffle5", "shuffle7", "xception"), min_length=1, description="candidate blocks per layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the classifier")
    bn_affine: bool = Field(False, description="learnable BatchNorm scale/shift (SPOS: false)")
    channel_scales: tuple[float, ...] | None = Field(
        None, min_length=1, description="channel search: each block's mid channels also searched, as these scales of "
        "oup/2 (SPOS paper: 0.2, 0.4, ..., 2.0); null: block search only")
    channel_bn: Literal["slice", "per_width"] = Field(
        "slice", description="channel search BN: slice one max-width BN (recalibrated per candidate), or one BN per width")

    @model_validator(mode="after")
    def _stages_agree(self) -> "ShuffleNetConfig":
        if len(self.stage_depths) != len(self.stage_channels):
            raise ValueError("stage_depths and stage_channels must have the same length")
        if any(d < 1 for d in self.stage_depths):
            raise ValueError("stage depths must be positive")
        if self.channel_scales is not None and any(c <= 0 for c in self.channel_scales):
            raise ValueError("channel_scales must be positive")
        return self


class NB201Config(BaseModel):
    """Options of the ``nb201`` NAS-Bench-201 cell space (6 edges × 5 ops, 15,625 cells)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    C: int = Field(16, gt=0, description="channels of the first stage (doubled at each reduction)")
    N: int = Field(5, gt=0, description="cells per stage (3 stages)")
    bn_affine: bool = Field(True, description="learnable BatchNorm in the cell ops (SETN: false)")
    track_running_stats: bool = Field(True, description="BatchNorm running statistics in the cell ops (TNAS: false)")


class TinyCellConfig(BaseModel):
    """Options of the ``tiny_cell`` test bed: a 3-edge NB201-like cell small enough to train every cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ops: tuple[Literal["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"], ...] = Field(
        ("none", "skip_connect", "nor_conv_3x3"), min_length=1, description="candidate ops per edge")
    C: int = Field(8, gt=0, description="channels of the first stage (doubled at each reduction)")
    N: int = Field(1, gt=0, description="cells per stage")
    stages: int = Field(2, gt=0, description="stages of cells, joined by residual reduction blocks")
    stem_stride: int = Field(2, ge=1, le=2, description="stride of the stem conv")
    bn_affine: bool = Field(True, description="learnable BatchNorm in the cell ops")
    track_running_stats: bool = Field(True, description="BatchNorm running statistics in the cell ops")

    @model_validator(mode="after")
    def _distinct(self) -> "TinyCellConfig":
        if len(set(self.ops)) != len(self.ops):
            raise ValueError("ops must be distinct")
        return self


def _input_of(ctx: Any) -> tuple[tuple[int, int, int], int]:
    """The dataset's input shape and class count, when a run context has data."""
    data = getattr(ctx, "data", None) if ctx is not None else None
    if data is None:
        return (1, 28, 28), 10
    return tuple(data.input_shape), data.num_classes  # type: ignore[return-value]


def make_tiny_chain(cfg: TinyChainConfig, ctx: Any = None) -> Any:
    from nascore.builtin.tiny import TinyChainSpace

    shape, classes = _input_of(ctx)
    return TinyChainSpace(layers=cfg.layers, width=cfg.width, input_shape=shape, num_classes=classes)


def make_tiny_matched(cfg: TinyMatchedConfig, ctx: Any = None) -> Any:
    from nascore.builtin.tiny import TinyMatchedSpace

    shape, classes = _input_of(ctx)
    return TinyMatchedSpace(layers=cfg.layers, width=cfg.width, input_shape=shape, num_classes=classes)


def make_mobilenet(cfg: MobileNetConfig, ctx: Any = None) -> Any:
    from nascore.builtin.mobilenet import MobileNetSpace

    shape, classes = _input_of(ctx)
    return MobileNetSpace(**cfg.model_dump(), input_shape=shape, num_classes=classes)


def make_shufflenet(cfg: ShuffleNetConfig, ctx: Any = None) -> Any:
    from nascore.builtin.shufflenet import ShuffleNetSpace

    shape, classes = _input_of(ctx)
    return ShuffleNetSpace(**cfg.model_dump(), input_shape=shape, num_classes=classes)


def make_nb201(cfg: NB201Config, ctx: Any = None) -> Any:
    from nascore.builtin.nb201 import nb201_space

    shape, classes = _input_of(ctx)
    return nb201_space(C=cfg.C, n_cells=cfg.N, bn_affine=cfg.bn_affine,
                       track_running_stats=cfg.track_running_stats, input_shape=shape, num_classes=classes)


def make_tiny_cell(cfg: TinyCellConfig, ctx: Any = None) -> Any:
    from nascore.builtin.nb201 import tiny_cell_space

    shape, classes = _input_of(ctx)
    return tiny_cell_space(ops=cfg.ops, C=cfg.C, n_cells=cfg.N, stages=cfg.stages, stem_stride=cfg.stem_stride,
                           bn_affine=cfg.bn_affine, track_running_stats=cfg.track_running_stats,
                           input_shape=shape, num_classes=classes)


@hookimpl
def register_search_spaces(register: Any) -> None:
    register("tiny_chain", make_tiny_chain, config=TinyChainConfig,
             summary="test bed: 4 layers × {conv3, conv5, skip} = 81 architectures")
    register("tiny_matched", make_tiny_matched, config=TinyMatchedConfig,
             summary="cost-matched test bed: 4 layers × {conv, dil, pool, lin}, 256 archs of equal MACs/params")
    register("mobilenet", make_mobilenet, config=MobileNetConfig,
             summary="MobileNetV3-like MBConv chain (SPOS/Cream/NEAS/ABS): k{3,5,7}×e{4,6} + skip per layer")
    register("shufflenet", make_shufflenet, config=ShuffleNetConfig,
             summary="SPOS ShuffleNetV2 space: 20 layers × {shuffle3, shuffle5, shuffle7, xception}")
    register("nb201", make_nb201, config=NB201Config,
             summary="NAS-Bench-201 cell: 6 edges × 5 ops (15,625 cells), C=16, N=5")
    register("tiny_cell", make_tiny_cell, config=TinyCellConfig,
             summary="test bed: NB201-like 3-edge cell × {none, skip_connect, nor_conv_3x3} (22 valid cells)")
