"""Segmentation backends, created by name (the ``backend`` parameter)."""

from vos_ros.core.backends.base import Backend

#: Backend used when the caller names none (the package's default pipeline): the shipped
#: space-time memory model (STM/MiVOS family on ImageNet MobileNetV2) run adaptively at its
#: default target (``adaptive.DEFAULT_TARGET``): the full model on a frame in six, the same
#: model on a crop around the last result on the others. On the DAVIS-2016 train hold-out
#: (bench/memory_holdout.txt) it scored 80.5 J&F against 79.3 for the memory model on every
#: frame, at ~1.5x its speed (whole vos_eval runs; docs/adaptive_compute.md). ``memory`` is
#: the full model on every frame, ``flow`` needs no torch and is faster still.
DEFAULT_BACKEND = 'adaptive'
#: Model kinds the default pipeline runs adaptively (they have a region-of-interest pass);
#: a model file of another kind runs alone.
ADAPTIVE_KINDS = ('memory',)
#: Backends that load a model file and run it on a device (options ``model_path``, ``device``).
MODEL_BACKENDS = ('adaptive', 'embedding', 'memory')


def default_backend_name(model_path=None):
    """The backend the default pipeline runs, for a model file (None: the shipped model).

    A memory model runs in ``DEFAULT_BACKEND`` (adaptive, with that model as the full one); a
    model of another kind (embedding) runs alone in the backend of its kind, as it always
    has. Raises ModelError for an unreadable model file.
    """
    if not model_path:
        return DEFAULT_BACKEND
    from vos_ros.core.model_io import read_metadata

    kind = read_metadata(model_path)['kind']
    return DEFAULT_BACKEND if kind in ADAPTIVE_KINDS else kind


def available_backends():
    """Return the names ``create_backend`` accepts."""
    return sorted(_factories())


def _factories():
    # Imported lazily: backends that need torch must not make torch a hard dependency.
    def flow(**options):
        from vos_ros.core.backends.flow import FlowBackend
        return FlowBackend(**options)

    def embedding(**options):
        # options: model_path, device, half, resolution, prior, prior_weight, ... (embedding.py)
        from vos_ros.core.backends.embedding import EmbeddingBackend
        return EmbeddingBackend(**options)

    def memory(**options):
        # options: model_path, device, half, resolution, top_k, memory_every, ... (memory.py)
        from vos_ros.core.backends.memory import MemoryBackend
        return MemoryBackend(**options)

    def adaptive(**options):
        # options: full, cheap, target_confidence, max_cheap_frames, confidence_model, ...
        # (adaptive.py); the rest (model_path, device, ...) go to the full backend
        from vos_ros.core.backends.adaptive import AdaptiveBackend
        return AdaptiveBackend(**options)

    return {'flow': flow, 'embedding': embedding, 'memory': memory, 'adaptive': adaptive}


def create_backend(name=None, **options):
    """Create a backend by name (``None`` or ``'default'`` = the default pipeline).

    With no name but a ``model_path``, the model's kind (its ``vos.json``) chooses the pipeline
    (``default_backend_name``): a memory model runs adaptively as the shipped one does, an
    embedding model alone, so a user's model file is enough.
    """
    if name in (None, '', 'default'):
        name = default_backend_name(options.get('model_path'))
    factories = _factories()
    if name not in factories:
        raise ValueError(
            f'unknown backend {name!r}; choose one of: {", ".join(sorted(factories))}')
    return factories[name](**options)


def create_backend_with_target(name=None, target_confidence=None, **options):
    """Create a backend whose effort follows ``target_confidence`` (0-100, issue 15).

    ``None``: exactly ``create_backend(name, **options)``. Otherwise the ``adaptive`` backend:
    ``name`` itself when it is (or the default pipeline is) ``adaptive``, else an adaptive
    backend whose full model is ``name`` (e.g. ``memory``: target 100 gives exactly its
    results). ValueError for ``flow``: it is the cheap path itself and has no full model.
    """
    if target_confidence is None:
        return create_backend(name, **options)
    # resolved once: create_backend would read the model file's metadata again for a default
    resolved = (default_backend_name(options.get('model_path')) if name in (None, '', 'default')
                else name)
    if resolved == 'adaptive':
        return create_backend(resolved, target_confidence=target_confidence, **options)
    if resolved == 'flow':
        raise ValueError('target_confidence needs a backend with a full model (memory, '
                         'embedding, adaptive); flow is the cheap path itself')
    from vos_ros.core.backends.adaptive import AdaptiveBackend
    from vos_ros.core.backends.adaptive import check_target

    target = check_target(target_confidence)  # before loading a model
    return AdaptiveBackend(full=create_backend(resolved, **options), target_confidence=target)


def create_backend_for(name=None, model_path=None, device=None, target_confidence=None,
                       model_option='model_path'):
    """Create a backend from a user's settings (node parameters, tool options).

    Returns ``(backend, device)``: ``device`` is the one passed on, ``'cpu'`` for a backend
    that takes none (``flow`` runs on the CPU whatever ``device`` says: the caller may say so).
    ``model_path`` (None or '' = the backend's default) for a backend that loads no model is a
    ModelError naming ``model_option`` (how the user gave it: a parameter, a command-line
    option): silently ignoring the user's model would be worse. ``target_confidence``: see
    ``create_backend_with_target``. A model that fails to load (torch's OSError or
    RuntimeError) is a ModelError naming the backend; ValueError for bad names and values.
    """
    from vos_ros.core.errors import ModelError

    resolved = (default_backend_name(model_path) if name in (None, '', 'default') else name)
    options = {}
    if resolved in MODEL_BACKENDS:
        if model_path:
            options['model_path'] = model_path
        if device is not None:
            options['device'] = device
    elif model_path and resolved in _factories():
        raise ModelError(f'{model_option} is set but backend {resolved!r} loads no model; '
                         f'choose a backend that does ({", ".join(MODEL_BACKENDS)}) or leave '
                         f'{model_option} out')
    try:
        backend = create_backend_with_target(resolved, target_confidence, **options)
    except (OSError, RuntimeError) as error:  # e.g. torch failing to read a file
        raise ModelError(f'backend {resolved!r} failed to start: {error}') from error
    return backend, options.get('device', 'cpu')


__all__ = ['ADAPTIVE_KINDS', 'Backend', 'DEFAULT_BACKEND', 'MODEL_BACKENDS',
           'available_backends', 'create_backend', 'create_backend_for',
           'create_backend_with_target', 'default_backend_name']
