"""Model files: TorchScript with a JSON extra file ``vos.json`` that says what the model is.

Metadata keys (``vos.json``):

- ``kind``: what the module computes; ``embedding`` = ``[1,3,H,W]`` -> ``[1,D,h,w]`` per-pixel
  embeddings (PML family); ``memory`` = a space-time memory network (STM/MiVOS/STCN family,
  ``vos_ros.core.models.memory_net``) whose exported methods ``encode_key``, ``encode_value``,
  ``read_memory`` and ``segment`` the ``memory`` backend calls; ``box`` = the box-and-clicks
  annotation network (``vos_ros.core.models.box_net``, exported ``encode`` and ``decode``,
  used by ``vos_ros.core.interactive``). Unknown kinds are refused.
- ``format_version``: version of this metadata layout (currently 1).
- ``mean``, ``std``: per-channel RGB normalisation on the 0..255 scale, applied before the model.
- ``stride``: input pixels per embedding pixel; ``input_multiple``: H and W must be multiples.
- ``embedding_dim``: D; ``normalized``: whether embeddings are unit vectors (``embedding``).
- ``key_dim``, ``value_dim``, ``top_k``: key and value channels and read-out top-k (``memory``).
- ``crop_size``: side of the square crop the ``box`` model runs on; ``context`` (box share
  added on every side), ``click_radius`` (crop pixels) describe the crop and the click discs.
- ``resolution``: shorter image side the model was trained at (a sensible inference size).
- ``training_data``, ``version``, ``created``: provenance (free-form).

torch is imported lazily so that importing this module never requires it.
"""

import json
import logging
import os
import warnings
import zipfile

from vos_ros.core.device import resolve_device
from vos_ros.core.errors import ModelError

_LOG = logging.getLogger(__name__)

#: Name of the metadata file inside the TorchScript archive.
META_FILE = 'vos.json'
#: The ONNX copy of a ``box`` network inside its model file (``box_net.model_to_onnx``).
BOX_ONNX_FILE = 'box.onnx'
#: Metadata layout version written by this code.
FORMAT_VERSION = 1
#: Model kinds this package can run.
KNOWN_KINDS = ('embedding', 'memory', 'box')
#: Keys every model's metadata must have.
REQUIRED_KEYS = ('kind', 'format_version', 'mean', 'std', 'stride')
#: Further keys each kind must have (positive integers).
KIND_KEYS = {'embedding': ('embedding_dim',), 'memory': ('key_dim', 'value_dim'),
             'box': ('crop_size',)}
#: Defaults for optional keys.
DEFAULTS = {'input_multiple': 1, 'normalized': False, 'resolution': 0, 'training_data': None,
            'version': '0', 'input_min_size': 16}


def _import_torch():
    try:
        import torch
    except ImportError as error:  # torch is an optional dependency of the package
        raise ModelError('learned models need PyTorch: pip install torch '
                         '(or use the weight-free flow backend)') from error
    return torch


def validate_metadata(meta, source='metadata'):
    """Check a metadata dict and return it with defaults filled in (ModelError if bad)."""
    if not isinstance(meta, dict):
        raise ModelError(f'{source}: {META_FILE} must hold a JSON object')
    if meta.get('kind') is not None and meta['kind'] not in KNOWN_KINDS:
        raise ModelError(f'{source}: unknown model kind {meta["kind"]!r} (this vos_ros runs '
                         f'{", ".join(KNOWN_KINDS)}); export an embedding model with vos_export '
                         '--from-traced MODEL --kind embedding')
    missing = [key for key in REQUIRED_KEYS + KIND_KEYS.get(meta.get('kind'), ())
               if key not in meta]
    if missing:
        raise ModelError(f'{source}: {META_FILE} lacks {", ".join(missing)}; re-create it '
                         'with vos_export')
    if int(meta['format_version']) > FORMAT_VERSION:
        raise ModelError(f'{source}: metadata format {meta["format_version"]} is newer than this '
                         f'vos_ros understands ({FORMAT_VERSION}); update vos_ros')
    out = dict(DEFAULTS)
    out.update(meta)
    for key in ('mean', 'std'):
        values = out[key]
        if not (isinstance(values, (list, tuple)) and len(values) == 3
                and all(isinstance(v, (int, float)) for v in values)):
            raise ModelError(f'{source}: {key} must be three numbers (RGB, 0..255 scale)')
    if any(float(v) <= 0 for v in out['std']):
        raise ModelError(f'{source}: std values must be > 0')
    for key in ('stride', 'input_multiple') + KIND_KEYS[out['kind']]:
        if not isinstance(out[key], int) or out[key] < 1:
            raise ModelError(f'{source}: {key} must be a positive integer, got {out[key]!r}')
    return out


def read_metadata(path, kinds=KNOWN_KINDS):
    """Return the validated metadata of a model file without loading the network.

    ModelError when the model's kind is not one of ``kinds``.
    """
    path = os.fspath(path)
    _check_file(path)
    meta = validate_metadata(_read_raw_metadata(path), path)
    if meta['kind'] not in kinds:
        raise ModelError(f'{path} is a {meta["kind"]!r} model; expected {", ".join(kinds)}')
    return meta


def _check_file(path):
    if not os.path.isfile(path):
        raise ModelError(f'model file not found: {path}')


def _read_raw_metadata(path):
    """Read ``vos.json`` from a TorchScript zip archive (no torch needed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            hits = [n for n in names if n.split('/')[-2:] == ['extra', META_FILE]]
            has_code = any('/code/' in n or n.startswith('code/') for n in names)
            if not hits:
                if has_code:
                    raise ModelError(
                        f'{path} is TorchScript without {META_FILE} metadata; add it with: '
                        f'vos_export --from-traced {path} --out MODEL.pt')
                raise ModelError(
                    f'{path} is not a TorchScript model (a training checkpoint?); turn a '
                    f'checkpoint into a model with: vos_export {path} --out MODEL.pt')
            text = archive.read(hits[0]).decode('utf-8')
    except zipfile.BadZipFile as error:
        raise ModelError(f'{path} is not a TorchScript model file ({error})') from error
    except OSError as error:
        raise ModelError(f'cannot read model file {path}: {error}') from error
    try:
        return json.loads(text)
    except ValueError as error:
        raise ModelError(f'{path}: {META_FILE} is not valid JSON ({error})') from error


def save_model(module, path, meta, extra_files=None):
    """Save a TorchScript module with validated metadata as ``vos.json``; returns the meta.

    ``extra_files``: more ``{name: bytes}`` stored beside it in the archive (read back without
    torch by :func:`read_extra_file`).
    """
    torch = _import_torch()
    meta = dict(meta)
    meta.setdefault('format_version', FORMAT_VERSION)
    meta = validate_metadata(meta, os.fspath(path))
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        files = dict(extra_files or {})
        files[META_FILE] = json.dumps(meta, indent=2)
        torch.jit.save(module, os.fspath(path), _extra_files=files)
    return meta


def read_extra_file(path, name):
    """Return the bytes of extra file ``name`` of a model archive, None when it has none.

    Reads the zip archive directly (no torch needed); ModelError for a file that is not one.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            hits = [n for n in archive.namelist() if n.split('/')[-2:] == ['extra', name]]
            return archive.read(hits[0]) if hits else None
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(f'{path} is not a TorchScript model file ({error})') from error


class LoadedModel:
    """A loaded TorchScript model with its metadata, device and dtype."""

    def __init__(self, module, meta, device, dtype, path):
        self.module = module
        self.meta = meta
        self.device = device
        self.dtype = dtype
        self.path = path

    @property
    def kind(self):
        """The model kind (``embedding`` or ``memory``)."""
        return self.meta['kind']

    def normalize(self, images):
        """Turn uint8 RGB ``[N,H,W,3]`` (numpy or tensor) into the model's input tensor."""
        torch = _import_torch()
        tensor = torch.as_tensor(images).to(self.device)
        if tensor.ndim == 3:
            tensor = tensor[None]
        tensor = tensor.permute(0, 3, 1, 2).float()
        mean = torch.tensor(self.meta['mean'], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.meta['std'], device=self.device).view(1, 3, 1, 1)
        return ((tensor - mean) / std).to(self.dtype)

    def __call__(self, tensor):
        """Run the module without gradients."""
        torch = _import_torch()
        with torch.inference_mode():
            return self.module(tensor)


def load_model(path, device='auto', half=None, kinds=KNOWN_KINDS):
    """Load a model file on ``device`` (auto/cpu/cuda/cuda:N); fp16 on CUDA unless half=False.

    Raises ModelError (missing file, no metadata, unknown kind, not TorchScript) or
    DeviceError (device not available) with a message that says what to do.
    """
    path = os.fspath(path)
    meta = read_metadata(path, kinds)
    torch = _import_torch()
    device = resolve_device(device)
    try:
        module = jit_load(path, device)
    except Exception as error:  # torch raises RuntimeError and friends with long messages
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f'cannot load TorchScript model {path}: {first}') from error
    module.eval()
    use_half = device.startswith('cuda') if half is None else bool(half)
    if use_half and not device.startswith('cuda'):
        _LOG.warning('fp16 requested on %s; running fp32 (fp16 is for CUDA)', device)
        use_half = False
    dtype = torch.float16 if use_half else torch.float32
    if use_half:
        module = module.half()
    _LOG.info('loaded %s model %s on %s (%s)', meta['kind'], path, device,
              'fp16' if use_half else 'fp32')
    return LoadedModel(module, meta, device, dtype, path)


def probe_embedding(module, size=(64, 64)):
    """Run ``module`` on a zero image and return (embedding_dim, stride) from its output shape.

    Used to fill metadata for a user's traced model; ModelError if the output is not
    ``[1,D,h,w]``.
    """
    torch = _import_torch()
    height, width = size
    with torch.inference_mode():
        try:
            out = module(torch.zeros(1, 3, height, width))
        except Exception as error:
            raise ModelError(f'model failed on a 1x3x{height}x{width} input: '
                             f'{str(error).strip().splitlines()[0] if str(error) else error}'
                             ) from error
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f'an embedding model must map [1,3,H,W] to [1,D,h,w]; got {shape}')
    out_h, out_w = int(out.shape[2]), int(out.shape[3])
    stride = max(1, int(round(height / max(1, out_h))))
    if int(round(width / max(1, out_w))) != stride:
        raise ModelError(f'output {out_h}x{out_w} of a {height}x{width} input has different '
                         'strides along height and width')
    return int(out.shape[1]), stride


def jit_load(path, device='cpu'):
    """``torch.jit.load`` without its deprecation warning (TorchScript is our file format)."""
    torch = _import_torch()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return torch.jit.load(os.fspath(path), map_location=device)


def load_checkpoint(path):
    """``torch.load`` a training checkpoint to the CPU, whatever the file turns out to be.

    Given a TorchScript archive, torch hands it on to ``torch.jit.load`` with a warning (and
    jit.load's deprecation one) and returns the module: the callers (``vos_export``,
    ``vos_train --resume``) refuse such a file with their own advice, so the warnings are not
    shown. Errors of ``torch.load`` propagate unchanged (each caller names the file in its own
    error type).
    """
    torch = _import_torch()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*TorchScript archive', category=UserWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        return torch.load(os.fspath(path), map_location='cpu', weights_only=False)


def default_model_path(kind='embedding'):
    """Return the path of the model of ``kind`` shipped in vos_ros/data (it may not exist)."""
    if kind not in KNOWN_KINDS:
        raise ValueError(f'unknown model kind {kind!r}; choose one of {", ".join(KNOWN_KINDS)}')
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                        f'{kind}.pt')
