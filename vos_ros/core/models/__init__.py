"""nn.Module definitions that ``vos_train`` builds and ``vos_export`` traces (need torch)."""

from vos_ros.core.models.embedding_net import build_model
from vos_ros.core.models.embedding_net import MODEL_ARCHS

__all__ = ['MODEL_ARCHS', 'build_model']
