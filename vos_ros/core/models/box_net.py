"""Class-agnostic box-and-clicks to mask network on the ImageNet MobileNetV2 encoder.

The input is a square crop around the (expanded) box of the object, resized to ``crop_size``,
and four hint maps of the same size: the box (1 inside), positive and negative click discs and
the previous mask (for refinement, zeros at the start). The output is one logit map at stride 2
of the crop, which the caller upsamples to the crop and warps back into the image.

The split follows SAM (Kirillov et al. 2023): an image encoder that sees only the image and
runs once per crop (``encode``), and a light prompt-conditioned decoder that runs once per
click (``decode``), so each further click costs only the decoder. The encoder is MobileNetV2 up
to stride 16 (the memory model's backbone, ``memory_net.mobilenet_v2_features``); the hints
enter the decoder through a small strided encoder of their own at strides 2, 4, 8 and 16
(RITM, Sofiiuk et al. 2022, feeds clicks as disc maps the same way), and the decoder has skip
connections from the image encoder back to stride 2 so boundaries are sharp. Dilated residual
blocks at stride 16 let every position see the whole crop (the box tells which object; the
decoder must see all of it to decide).

Written for ``torch.jit.script``: ``encode`` and ``decode`` are exported methods.
"""

import typing

import torch
from torch import nn
from torch.nn import functional as F

from vos_ros.core.models.memory_net import _ResBlock
from vos_ros.core.models.memory_net import mobilenet_v2_features
from vos_ros.core.models.memory_net import STAGE_CHANNELS
from vos_ros.core.models.memory_net import STAGES

#: Hint channels: box, positive clicks, negative clicks, previous mask.
HINT_CHANNELS = 4


class _UpBlock(nn.Module):
    """Upsample x2, fuse the image skip and the hint features (1x1), then a residual block."""

    def __init__(self, skip_channels: int, cin: int, cout: int):
        super().__init__()
        self.skip = nn.Conv2d(skip_channels, cin, 1)
        self.block = _ResBlock(cin, cout)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
        return self.block(x + self.skip(skip))


class BoxNet(nn.Module):
    """Prompted segmentation: ``encode(image)`` once, ``decode(features, hints)`` per prompt.

    ``encode``: normalised RGB ``[B,3,S,S]`` (S a multiple of 16) -> features at strides 16, 8,
    4, 2. ``decode``: those features and hints ``[B,4,S,S]`` -> logits ``[B,1,S/2,S/2]``.
    ``width`` scales the decoder's channels (the encoder is fixed).
    """

    stride = 2
    input_multiple = 16

    def __init__(self, width: int = 64, pretrained: bool = True):
        super().__init__()
        self.width = int(width)
        layers = list(mobilenet_v2_features(pretrained).children())
        self.stage2 = nn.Sequential(*layers[STAGES[0][0]:STAGES[0][1]])
        self.stage4 = nn.Sequential(*layers[STAGES[1][0]:STAGES[1][1]])
        self.stage8 = nn.Sequential(*layers[STAGES[2][0]:STAGES[2][1]])
        self.stage16 = nn.Sequential(*layers[STAGES[3][0]:STAGES[3][1]])
        w = self.width
        c2, c4, c8, c16 = STAGE_CHANNELS
        # hint encoder: strides 2, 4, 8, 16
        self.hint2 = nn.Conv2d(HINT_CHANNELS, 8, 3, stride=2, padding=1)
        self.hint4 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.hint8 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.hint16 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fuse16 = nn.Sequential(_ResBlock(c16 + 32, w * 3 // 2),
                                    _ResBlock(w * 3 // 2, w * 3 // 2, 2),
                                    _ResBlock(w * 3 // 2, w * 3 // 2, 4))
        self.up8 = _UpBlock(c8 + 16, w * 3 // 2, w)
        self.up4 = _UpBlock(c4 + 16, w, w // 2)
        # stride 2: a light head (the most pixels, so the fewest channels)
        self.skip2 = nn.Conv2d(c2 + 8, w // 4, 1)
        self.reduce2 = nn.Conv2d(w // 2, w // 4, 1)
        self.head2 = nn.Conv2d(w // 4, w // 4, 3, padding=1)
        self.pred = nn.Conv2d(w // 4, 1, 3, padding=1)

    def encoder_stages(self):
        """Return the pretrained encoder stages (stride 2, 4, 8, 16) in order."""
        return [self.stage2, self.stage4, self.stage8, self.stage16]

    @torch.jit.export
    def encode(self, image: torch.Tensor) -> typing.Tuple[
            torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode ``[B,3,S,S]`` into features (f16, f8, f4, f2)."""
        f2 = self.stage2(image)
        f4 = self.stage4(f2)
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        return f16, f8, f4, f2

    @torch.jit.export
    def decode(self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, f2: torch.Tensor,
               hints: torch.Tensor) -> torch.Tensor:
        """Decode features and hints ``[B,4,S,S]`` into logits ``[B,1,S/2,S/2]``."""
        h2 = F.relu(self.hint2(hints))
        h4 = F.relu(self.hint4(h2))
        h8 = F.relu(self.hint8(h4))
        h16 = F.relu(self.hint16(h8))
        x = self.fuse16(torch.cat([f16, h16], dim=1))
        x = self.up8(torch.cat([f8, h8], dim=1), x)
        x = self.up4(torch.cat([f4, h4], dim=1), x)
        x = F.interpolate(x, size=f2.shape[-2:], mode='bilinear', align_corners=False)
        x = F.relu(self.reduce2(F.relu(x)) + self.skip2(torch.cat([f2, h2], dim=1)))
        x = F.relu(self.head2(x))
        return self.pred(x)

    def forward(self, image: torch.Tensor, hints: torch.Tensor) -> torch.Tensor:
        """Return the logits of ``image`` ``[B,3,S,S]`` with ``hints`` ``[B,4,S,S]``."""
        f16, f8, f4, f2 = self.encode(image)
        return self.decode(f16, f8, f4, f2, hints)


#: Architectures by name (stored in checkpoints so export can rebuild them).
BOX_ARCHS = {'boxnet_mbv2': BoxNet}


def model_to_onnx(model, crop_size):
    """Return ONNX bytes of ``model.forward`` for a mirrored pair, or None without ``onnx``.

    Input ``image`` ``[2,3,S,S]`` (normalised RGB: the crop and its mirror image), ``hints``
    ``[2,4,S,S]``; output ``logits`` ``[2,1,S/2,S/2]``, S = ``crop_size``. ``annotate`` runs
    it with OpenCV's DNN module so that a box becomes a mask without importing torch (torch's
    import alone took 2 of the 2.8 s an annotation took). Written with torch's TorchScript
    exporter (opset 13, which OpenCV 4.6 reads) when the ``onnx`` package is installed.
    """
    import io
    import logging
    import warnings

    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        logging.getLogger(__name__).warning(
            'onnx is not installed: the box model is written without its ONNX copy (annotate '
            'then imports torch, ~2 s slower); pip install onnx to add it')
        return None
    buffer = io.BytesIO()
    size = int(crop_size)
    inputs = (torch.zeros(2, 3, size, size), torch.zeros(2, HINT_CHANNELS, size, size))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # the TorchScript exporter is deprecated, still works
        torch.onnx.export(model, inputs, buffer, dynamo=False, opset_version=13,
                          input_names=['image', 'hints'], output_names=['logits'],
                          do_constant_folding=True)
    return buffer.getvalue()
