"""I3D InceptionV1 (Carreira & Zisserman, CVPR 2017), 1024-d pooled features.

Layer names follow the common PyTorch `InceptionI3d` layout (`Conv3d_1a_7x7.conv3d.weight`, …,
`Mixed_5c.b3b.bn.running_var`, `logits.conv3d.*`). TensorFlow "SAME" padding is reproduced
exactly (asymmetric, -inf for max-pooling), so converted Kinetics-400 weights
(`vad.models.backbones.i3d_convert`) give the reference network's outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vad.models.backbones.catalog import register
from vad.models.registry import ModelMeta, Tiny


def _same_pad(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    def __init__(self, c_in, c_out, kernel=(1, 1, 1), stride=(1, 1, 1), bn=True, relu=True, bias=False):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride, bias=bias)
        self.bn = nn.BatchNorm3d(c_out, eps=1e-3, affine=True) if bn else None
        if self.bn is not None:
            self.bn.weight.requires_grad_(False)  # Sonnet's BN has no scale: weight stays 1

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class Mixed(nn.Module):
    def __init__(self, c_in, c):
        super().__init__()
        self.b0 = Unit3D(c_in, c[0])
        self.b1a, self.b1b = Unit3D(c_in, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
        ]
        for name in ("Mixed_3b", "Mixed_3c"):
            layers.append((name, Mixed(*MIXED[name])))
        layers.append(("MaxPool3d_4a_3x3", MaxPoolSame((3, 3, 3), (2, 2, 2))))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            layers.append((name, Mixed(*MIXED[name])))
        layers.append(("MaxPool3d_5a_2x2", MaxPoolSame((2, 2, 2), (2, 2, 2))))
        for name in ("Mixed_5b", "Mixed_5c"):
            layers.append((name, Mixed(*MIXED[name])))
        for name, module in layers:
            self.add_module(name, module)
        self.order = [name for name, _ in layers]
        self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)
        self.pretrained = False

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """RGB clips (B, T, H, W, 3) in [0, 1] -> pooled Mixed_5c features (B, 1024)."""
        return self.layer_output(clips, self.order[-1]).mean(dim=(2, 3, 4))

    def layer_output(self, clips: torch.Tensor, layer: str) -> torch.Tensor:
        """RGB clips (B, T, H, W, 3) in [0, 1] -> the activations after `layer` (B, C, T', H', W'), the
        layers after it not run: e.g. Mixed_4f gives 832 channels on a grid of (T/4, H/16, W/16) patches."""
        if layer not in self.order:
            raise ValueError(f"unknown I3D layer {layer!r}; choose from {', '.join(self.order)}")
        x = clips.permute(0, 4, 1, 2, 3).float() * 2 - 1
        for name in self.order[: self.order.index(layer) + 1]:
            x = getattr(self, name)(x)
        return x

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.features(clips)

    def classify(self, clips: torch.Tensor) -> torch.Tensor:
        """Kinetics-400 logits (B, 400); meaningful only with converted weights."""
        pooled = self.features(clips)[:, :, None, None, None]
        return self.logits(pooled).flatten(1)


def i3d(*, state_dict: dict[str, torch.Tensor] | None = None) -> InceptionI3d:
    model = InceptionI3d()
    if state_dict is not None:
        model.load_state_dict(state_dict)
        model.pretrained = True
    return model.eval()


PAPER = "Carreira & Zisserman, Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset, CVPR 2017"
# RGB in [0, 1] (scaled to [-1, 1] inside); Kinetics-400 was trained on 224x224; pooled Mixed_5c is 1024-d.
register(ModelMeta("i3d", i3d, PAPER, clip_len=16, input_size=(224, 224), grayscale=False, normalisation="RGB scaled to [-1, 1]",
                   feature_dim=1024, tiny=Tiny({}, (1, 8, 64, 64, 3)),
                   # bf16 measured slower than fp32 on an H200 (656 vs 957 clips/s, bench/RESULTS.md)
                   precision="fp32"))
