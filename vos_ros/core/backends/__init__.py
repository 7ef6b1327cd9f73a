"""Segmentation backends, created by name (the ``backend`` parameter)."""

from vos_ros.core.backends.base import Backend

#: Backend used when the caller names none (the package's default pipeline): the shipped
#: embedding model fused with flow. On DAVIS-2016 sequences its training recipe never saw it
#: beat flow alone by 15 J&F and kept the node at 10 Hz at 480p on a 2-core CPU
#: (README "Learned models"). ``flow`` needs no torch and is faster.
DEFAULT_BACKEND = 'embedding'


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

    return {'flow': flow, 'embedding': embedding, 'memory': memory}


def create_backend(name=None, **options):
    """Create a backend by name (``None`` or ``'default'`` = the default pipeline).

    With no name but a ``model_path``, the backend is the one that runs that model's kind
    (its ``vos.json``), so a user's model file is enough to choose the pipeline.
    """
    if name in (None, '', 'default'):
        name = DEFAULT_BACKEND
        if options.get('model_path'):
            from vos_ros.core.model_io import read_metadata
            name = read_metadata(options['model_path'])['kind']
    factories = _factories()
    if name not in factories:
        raise ValueError(
            f'unknown backend {name!r}; choose one of: {", ".join(sorted(factories))}')
    return factories[name](**options)


__all__ = ['Backend', 'DEFAULT_BACKEND', 'available_backends', 'create_backend']
