"""Small pixel-embedding CNNs (PML family): ``[N,3,H,W]`` -> ``[N,D,H/4,W/4]``.

Trained from scratch on a CPU, so the network is deliberately tiny: four strided stages
(strides 2, 4, 8, 16) with dilated convolutions at the deepest one for context, and a head that
fuses stride 4, 8 and 16 features at stride 4. Output embeddings are L2-normalised, so distances
live in [0, 4] and a fixed triplet margin means the same thing throughout training.
"""

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin, cout, stride=1, dilation=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _project(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class EmbeddingNet(nn.Module):
    """Per-pixel embeddings at stride 4 (``width`` scales every channel count)."""

    #: Output stride: embedding pixel (i, j) covers input pixels 4i..4i+3.
    stride = 4
    #: Inputs must be a multiple of this (the deepest stage has stride 16).
    input_multiple = 16

    def __init__(self, embedding_dim=32, width=1.0):
        super().__init__()
        c1, c2, c3, c4 = (max(8, int(round(c * width))) for c in (16, 32, 64, 128))
        self.embedding_dim = int(embedding_dim)
        self.stage1 = _conv(3, c1, stride=2)
        self.stage2 = nn.Sequential(_conv(c1, c2, stride=2), _conv(c2, c2))
        self.stage3 = nn.Sequential(_conv(c2, c3, stride=2), _conv(c3, c3))
        self.stage4 = nn.Sequential(_conv(c3, c4, stride=2), _conv(c4, c4, dilation=2),
                                    _conv(c4, c4, dilation=4))
        self.proj8 = _project(c3, c2)
        self.proj16 = _project(c4, c3)
        fused = c2 + c2 + c3
        self.head = nn.Sequential(_project(fused, 2 * c2), _conv(2 * c2, 48),
                                  nn.Conv2d(48, self.embedding_dim, 1))

    def forward(self, x):
        """Map normalised images ``[N,3,H,W]`` to unit embeddings ``[N,D,H/4,W/4]``."""
        f4 = self.stage2(self.stage1(x))
        f8 = self.stage3(f4)
        f16 = self.stage4(f8)
        size = f4.shape[-2:]
        up8 = F.interpolate(self.proj8(f8), size=size, mode='bilinear', align_corners=False)
        up16 = F.interpolate(self.proj16(f16), size=size, mode='bilinear', align_corners=False)
        out = self.head(torch.cat([f4, up8, up16], dim=1))
        return F.normalize(out, dim=1)


#: Architectures by name (stored in checkpoints so export can rebuild them).
MODEL_ARCHS = {'embednet': EmbeddingNet}


def build_model(arch='embednet', **kwargs):
    """Build an architecture by name; ValueError lists the known ones."""
    if arch not in MODEL_ARCHS:
        raise ValueError(f'unknown model architecture {arch!r}; choose one of '
                         f'{", ".join(sorted(MODEL_ARCHS))}')
    return MODEL_ARCHS[arch](**kwargs)
