"""The package's own exceptions (like cv_bridge's CvBridgeError)."""


class VosError(Exception):
    """Base class of every error vos_ros raises on purpose."""


class DataError(VosError):
    """A data file or folder is missing, unreadable or inconsistent; the message names it."""


class ModelError(VosError):
    """A model file is missing, unreadable, lacks metadata or is of an unknown kind."""


class DeviceError(VosError):
    """The requested compute device is not available."""
