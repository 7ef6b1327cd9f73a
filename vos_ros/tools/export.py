"""``vos_export``: a training checkpoint (or a user's traced model) -> TorchScript + vos.json.

``vos_export CKPT --out model.pt`` rebuilds the network a ``vos_train`` checkpoint describes,
traces it (``embedding``) or scripts it with its exported methods (``memory``, ``box``) and
stores the metadata the loader needs; the kind is the checkpoint's. ``vos_export
--from-traced MODEL.pt --out model.pt`` adds metadata to your own TorchScript embedding model
(``[1,3,H,W]`` -> ``[1,D,h,w]``); D and the output stride are measured by running it once.
"""

import argparse
import datetime
import os
import shlex
import sys
import warnings

from vos_ros.core.errors import ModelError
from vos_ros.core.errors import VosError
from vos_ros.core.model_io import KNOWN_KINDS
from vos_ros.tools.cli import ToolParser


def build_parser():
    """Return the argument parser of vos_export."""
    parser = ToolParser(
        prog='vos_export', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='vos_train checkpoint (e.g. out/train/last.pt)')
    parser.add_argument('--from-traced', default=None, metavar='MODEL',
                        help='instead: a TorchScript model [1,3,H,W] -> [1,D,h,w] to which '
                             'metadata is added')
    parser.add_argument('--out', required=True, help='model file to write')
    parser.add_argument('--kind', default=None, choices=KNOWN_KINDS,
                        help="model kind stored in vos.json: the checkpoint's (default; another "
                             'is refused), embedding with --from-traced')
    parser.add_argument('--mean', type=float, nargs=3, default=None, metavar=('R', 'G', 'B'),
                        help='input mean on the 0..255 scale (--from-traced; default ImageNet)')
    parser.add_argument('--std', type=float, nargs=3, default=None, metavar=('R', 'G', 'B'),
                        help='input std on the 0..255 scale (--from-traced; default ImageNet)')
    parser.add_argument('--input-multiple', type=int, default=None,
                        help='H and W must be multiples of this (--from-traced; default: the '
                             'measured stride)')
    parser.add_argument('--normalized', action='store_true',
                        help='the traced model outputs unit-length embeddings')
    parser.add_argument('--resolution', type=int, default=None,
                        help='shorter image side to run the model at (0 = working size)')
    parser.add_argument('--training-data', default=None,
                        help='free-text description of the training data (--from-traced)')
    parser.add_argument('--version', default=None, help='model version string')
    parser.add_argument('--probe-size', type=int, nargs=2, default=(128, 128),
                        metavar=('H', 'W'), help='input size used to measure D and the stride')
    return parser


def error_text(error):
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_out(path, option='--out'):
    """Refuse an ``--out`` no model file can be written to (ValueError), before any loading.

    Missing parent folders are fine: ``save_model`` creates them, as the other tools do; the
    nearest existing one must take a new entry (``train.check_out_path``).
    """
    from vos_ros.tools.train import check_out_path

    check_out_path(path, option, folder=False)


def model_given_error(path, out_path, meta):
    """ModelError for a TorchScript model file given as the checkpoint, saying what to run.

    ``meta``: the file's validated metadata, None for TorchScript without it.
    """
    from vos_ros.core.model_io import META_FILE

    traced = f'vos_export --from-traced {shlex.quote(path)} --out {shlex.quote(out_path)}'
    if meta is None:
        return ModelError(f'{path} is a TorchScript model without {META_FILE} metadata, not a '
                          f'vos_train checkpoint; add the metadata with: {traced}')
    what = (f'{path} is an exported TorchScript model (kind {meta["kind"]}, version '
            f'{meta["version"]}), not a vos_train checkpoint')
    if meta['kind'] == 'embedding':
        return ModelError(f'{what}; to add or replace its metadata use: {traced}')
    # --from-traced measures an embedding model ([1,3,H,W] -> [1,D,h,w]) only
    return ModelError(f'{what}: it runs as it is; vos_export rebuilds a {meta["kind"]} model '
                      'only from its training checkpoint (OUT/last.pt)')


def export_checkpoint(checkpoint_path, out_path, version=None, resolution=None, kind=None):
    """Trace a vos_train checkpoint into a model file; returns the metadata written.

    The model's kind is the checkpoint's; ``kind`` (``--kind``), given, must be the same.
    """
    import torch

    from vos_ros.core.model_io import load_checkpoint
    from vos_ros.core.model_io import read_metadata
    from vos_ros.core.model_io import save_model
    from vos_ros.core.models import build_model

    if not os.path.isfile(checkpoint_path):
        raise ModelError(f'checkpoint not found: {checkpoint_path}')
    try:
        meta = read_metadata(checkpoint_path)
    except ModelError:
        meta = None  # not an exported model: a checkpoint, or TorchScript without metadata
    if meta is not None:
        raise model_given_error(checkpoint_path, out_path, meta)
    try:
        # a TorchScript archive loads as a module: refused below with what to run instead
        checkpoint = load_checkpoint(checkpoint_path)
    except Exception as error:
        raise ModelError(f'cannot read checkpoint {checkpoint_path}: '
                         f'{error_text(error)}') from error
    if isinstance(checkpoint, torch.jit.ScriptModule):
        raise model_given_error(checkpoint_path, out_path, None)
    try:
        arch, kwargs = checkpoint['arch'], checkpoint['model_kwargs']
        state, train_meta = checkpoint['state_dict'], checkpoint['meta']
    except (KeyError, TypeError) as error:
        raise ModelError(f'{checkpoint_path} is not a vos_train checkpoint (no {error}); for a '
                         'TorchScript model use --from-traced') from error
    except Exception as error:
        raise ModelError(f'{checkpoint_path} is not a vos_train checkpoint '
                         f'({error_text(error)})') from error
    found = train_meta.get('kind', 'embedding')
    if kind is not None and kind != found:
        # the network and its metadata are the checkpoint's: a file that said otherwise
        # would load as the wrong kind
        raise ModelError(f'{checkpoint_path} is a checkpoint of kind {found}: --kind {kind} '
                         "contradicts it (leave --kind out: the kind is the checkpoint's)")
    if found == 'memory':
        return _export_memory(checkpoint, out_path, version, resolution)
    if found == 'box':
        from vos_ros.tools.train_box import export_checkpoint as export_box
        return export_box(checkpoint_path, out_path, version, checkpoint=checkpoint)
    model = build_model(arch, **kwargs)
    model.load_state_dict(state)
    model.eval()
    multiple = int(train_meta.get('input_multiple', 16))
    example = torch.zeros(1, 3, 8 * multiple, 12 * multiple)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    meta = {
        'kind': found,
        'mean': list(train_meta['mean']), 'std': list(train_meta['std']),
        'stride': int(train_meta['stride']), 'input_multiple': multiple,
        'embedding_dim': int(train_meta['embedding_dim']),
        'normalized': bool(train_meta.get('normalized', False)),
        'resolution': int(train_meta.get('resolution', 0) if resolution is None else resolution),
        'arch': arch, 'model_kwargs': kwargs,
        'training_data': train_meta.get('training_data'),
        'training': {'iteration': int(checkpoint.get('iteration', 0)),
                     'elapsed_s': float(checkpoint.get('elapsed_s', 0.0)),
                     'loss': train_meta.get('loss')},
        'version': version or f'{arch}-it{int(checkpoint.get("iteration", 0))}',
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    return save_model(traced, out_path, meta)


def script_checkpoint(checkpoint, archs, kind, preserved_attrs=None):
    """Rebuild a checkpoint's network from ``archs`` (by its ``arch``) and script it.

    The checkpoint holds every weight, so no ImageNet file is read. ``preserved_attrs`` given,
    the script is also frozen (batch norm folded into the convolutions, weights inlined: a
    faster first call) keeping those methods. Returns ``(model in eval mode, script)``;
    ModelError names an unknown architecture of the ``kind``.
    """
    import torch

    arch, kwargs = checkpoint['arch'], checkpoint['model_kwargs']
    if arch not in archs:
        raise ModelError(f'unknown {kind} architecture {arch!r}; this vos_ros knows '
                         f'{", ".join(sorted(archs))}')
    model = archs[arch](pretrained=False, **kwargs)
    model.load_state_dict(checkpoint['state_dict'])
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        scripted = torch.jit.script(model)
        if preserved_attrs is not None:
            scripted = torch.jit.freeze(scripted, preserved_attrs=preserved_attrs)
    return model, scripted


def _export_memory(checkpoint, out_path, version=None, resolution=None):
    """Script a memory-model checkpoint (all exported methods) into a model file."""
    from vos_ros.core.model_io import save_model
    from vos_ros.core.models.memory_net import MEMORY_ARCHS

    arch, kwargs, train_meta = checkpoint['arch'], checkpoint['model_kwargs'], checkpoint['meta']
    _, scripted = script_checkpoint(checkpoint, MEMORY_ARCHS, 'memory')
    meta = {
        'kind': 'memory', 'mean': list(train_meta['mean']), 'std': list(train_meta['std']),
        'stride': int(train_meta['stride']), 'input_multiple': int(train_meta['input_multiple']),
        'key_dim': int(train_meta['key_dim']), 'value_dim': int(train_meta['value_dim']),
        'top_k': int(train_meta['top_k']),
        'resolution': int(train_meta.get('resolution', 0) if resolution is None else resolution),
        'arch': arch, 'model_kwargs': kwargs, 'backbone': train_meta.get('backbone'),
        'training_data': train_meta.get('training_data'),
        'training': {'iteration': int(checkpoint.get('iteration', 0)),
                     'elapsed_s': float(checkpoint.get('elapsed_s', 0.0)),
                     'loss': train_meta.get('loss')},
        'version': version or f'{arch}-it{int(checkpoint.get("iteration", 0))}',
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    return save_model(scripted, out_path, meta)


def export_traced(traced_path, out_path, args):
    """Add metadata to a user's TorchScript embedding model; returns the metadata written."""
    from vos_ros.core.model_io import jit_load
    from vos_ros.core.model_io import META_FILE
    from vos_ros.core.model_io import probe_embedding
    from vos_ros.core.model_io import read_metadata
    from vos_ros.core.model_io import save_model
    from vos_ros.tools.train import MEAN
    from vos_ros.tools.train import STD

    if args.kind not in (None, 'embedding'):
        # the probe below measures an embedding model ([1,3,H,W] -> [1,D,h,w]) only
        raise ValueError(f'--kind {args.kind}: --from-traced makes an embedding model only')
    if not os.path.isfile(traced_path):
        raise ModelError(f'traced model not found: {traced_path}')
    try:
        earlier = read_metadata(traced_path)
    except ModelError:
        earlier = {}  # no (valid) metadata, the usual traced model, or not TorchScript at all
    if earlier.get('kind', 'embedding') != 'embedding':
        # A memory or box network's forward also gives a feature map, which the probe below
        # would take for an embedding: the file would load as the wrong kind.
        raise ModelError(f'{traced_path} is a {earlier["kind"]} model (its {META_FILE}); '
                         '--from-traced adds metadata to a traced embedding model only: a '
                         f'{earlier["kind"]} model runs as it is')
    try:
        module = jit_load(traced_path, 'cpu')
    except Exception as error:
        raise ModelError(f'{traced_path} is not a TorchScript model ({error_text(error)}); '
                         'trace your model with torch.jit.trace and save it with '
                         'torch.jit.save') from error
    module.eval()
    dim, stride = probe_embedding(module, tuple(args.probe_size))
    meta = {
        'kind': 'embedding',
        'mean': list(args.mean) if args.mean else list(MEAN),
        'std': list(args.std) if args.std else list(STD),
        'stride': stride, 'input_multiple': int(args.input_multiple or stride),
        'embedding_dim': dim, 'normalized': bool(args.normalized),
        'resolution': int(args.resolution or 0),
        'training_data': args.training_data or 'unknown (user model)',
        'version': args.version or os.path.basename(traced_path),
        'source': f'{os.path.basename(traced_path)} (metadata added by vos_export; '
                  f'replaces any earlier {META_FILE})',
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    return save_model(module, out_path, meta)


def main(argv=None):
    """Console entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if bool(args.checkpoint) == bool(args.from_traced):
            raise ValueError('give either a checkpoint or --from-traced MODEL (not both)')
        check_out(args.out)
        try:
            import torch  # noqa: F401
        except ImportError as error:
            raise ModelError('vos_export needs PyTorch: pip install torch') from error
        if args.from_traced:
            meta = export_traced(args.from_traced, args.out, args)
        else:
            meta = export_checkpoint(args.checkpoint, args.out, args.version, args.resolution,
                                     args.kind)
    except (VosError, ValueError, OSError) as error:
        # OSError: writing the file failed after all (a full disk, a folder made meanwhile)
        print(f'vos_export: error: {error}', file=sys.stderr)
        return 2
    size_mb = os.path.getsize(args.out) / 1e6
    sizes = (f'D={meta["embedding_dim"]}' if meta['kind'] == 'embedding'
             else f'crop {meta["crop_size"]}' if meta['kind'] == 'box'
             else f'key {meta["key_dim"]}, value {meta["value_dim"]}')
    print(f'vos_export: wrote {args.out} ({size_mb:.2f} MB): kind {meta["kind"]}, '
          f'{sizes}, stride {meta["stride"]}, version {meta["version"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
