"""rosbag2 reading and writing for the bag tools, with the pure-Python ``rosbags`` library.

Nothing here imports rclpy: bags are read and written as CDR bytes, which is also what rclpy
publishes raw and what a raw subscription hands over, so one decoder serves bags and DDS.
Both rosbag2 storage formats (``mcap``, ``sqlite3``) are supported. Every failure to open or
read a bag is raised as :class:`~vos_ros.core.errors.DataError` naming the bag.
"""

import os
import pathlib
import shutil

import numpy as np

from vos_ros.core import image_codec
from vos_ros.core.errors import DataError

IMAGE_TYPE = 'sensor_msgs/msg/Image'
#: Where vos_make_bag writes the ground-truth label maps (and vos_bag_eval reads them).
GT_TOPIC = '/ground_truth'
STORAGES = ('mcap', 'sqlite3')
#: rosbag2 metadata version written: 8 is what Jazzy's rosbag2 writes and reads.
BAG_VERSION = 8

#: 8-bit encodings understood when decoding: name -> channel count.
ENCODINGS = image_codec.ENCODINGS

_typestore = None


def typestore():
    """Return the rosbags type store of ROS 2 Jazzy (built once)."""
    global _typestore
    if _typestore is None:
        from rosbags.typesys import get_typestore
        from rosbags.typesys import Stores

        _typestore = get_typestore(Stores.ROS2_JAZZY)
    return _typestore


def stamp_to_ns(stamp):
    """Return a builtin_interfaces/Time (rosbags or rclpy) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nsec(nanoseconds):
    """Split integer nanoseconds into (sec, nanosec)."""
    return divmod(int(nanoseconds), 1_000_000_000)


# -- messages -------------------------------------------------------------------------------------


def image_msg(array, stamp_ns, frame_id='camera', encoding=None):
    """Build a rosbags sensor_msgs/Image from an H×W×3 RGB or H×W mono array.

    ``encoding`` defaults to ``rgb8`` for 3 channels and ``mono8`` for 2-D arrays; ``bgr8`` and
    ``rgba8``/``bgra8`` are accepted with matching arrays (given in that channel order).
    """
    store = typestore()
    image_cls = store.types[IMAGE_TYPE]
    header_cls = store.types['std_msgs/msg/Header']
    time_cls = store.types['builtin_interfaces/msg/Time']
    array = np.ascontiguousarray(array, dtype=np.uint8)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if encoding is None:
        encoding = {1: 'mono8', 3: 'rgb8', 4: 'rgba8'}.get(channels)
    if encoding not in ENCODINGS or ENCODINGS[encoding] != channels:
        raise ValueError(f'encoding {encoding!r} does not fit an array of shape {array.shape}')
    sec, nanosec = ns_to_sec_nsec(stamp_ns)
    height, width = array.shape[:2]
    return image_cls(
        header=header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id),
        height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * channels, data=array.reshape(-1))


def serialize(msg, msgtype=IMAGE_TYPE):
    """Serialize a rosbags message to CDR bytes."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(data, msgtype=IMAGE_TYPE):
    """Deserialize CDR bytes to a rosbags message; DataError if they are not one."""
    try:
        return typestore().deserialize_cdr(data, msgtype)
    except Exception as error:  # rosbags raises assorted low-level errors on bad bytes
        raise DataError(f'cannot decode a {msgtype} message: {error}') from error


#: Return an Image message's pixels as H×W or H×W×C uint8, validated (ImageDecodeError).
image_array = image_codec.raw_to_array

#: Return an Image message as H×W×3 RGB uint8 (gray stacked, alpha dropped, BGR swapped).
image_rgb = image_codec.raw_to_rgb

#: Return an Image message holding a mask as an H×W uint8 label map (0/255 -> object 1).
image_labels = image_codec.raw_to_labels


# -- reading --------------------------------------------------------------------------------------


def bag_folder(path):
    """Return the rosbag2 folder for ``path`` (the folder, or a file inside it)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(folder, 'metadata.yaml')):
            return folder
        raise DataError(f'{path} is a file, not a rosbag2 folder (no metadata.yaml next to it)')
    if not os.path.isdir(path):
        raise DataError(f'bag not found: {path}')
    if not os.path.isfile(os.path.join(path, 'metadata.yaml')):
        raise DataError(f'{path} is not a rosbag2 folder (no metadata.yaml)')
    return path


class BagReader:
    """Read a rosbag2 folder (mcap or sqlite3); context manager; errors as DataError."""

    def __init__(self, path):
        """Open the bag at ``path`` (its folder or a file inside it)."""
        from rosbags.rosbag2 import Reader

        self.path = bag_folder(path)
        try:
            self._reader = Reader(pathlib.Path(self.path))
            self._reader.open()
        except Exception as error:  # ReaderError, yaml, sqlite3 and mcap errors alike
            raise DataError(f'cannot open bag {self.path}: {error}') from error

    def close(self):
        """Close the bag."""
        self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def storage(self):
        """The storage identifier (``mcap`` or ``sqlite3``)."""
        import yaml

        with open(os.path.join(self.path, 'metadata.yaml'), encoding='utf-8') as handle:
            info = yaml.safe_load(handle)['rosbag2_bagfile_information']
        return info.get('storage_identifier', '')

    def topics(self):
        """Return ``{topic: (msgtype, message_count)}``."""
        return {name: (info.msgtype, info.msgcount)
                for name, info in self._reader.topics.items()}

    def msgtype(self, topic):
        """Return the message type of ``topic``, or None if the bag lacks it."""
        info = self._reader.topics.get(topic)
        return info.msgtype if info else None

    def message_count(self, topic):
        """Return how many messages ``topic`` has (0 if absent)."""
        info = self._reader.topics.get(topic)
        return info.msgcount if info else 0

    def raw_messages(self, topics):
        """Yield ``(topic, log_time_ns, cdr_bytes)`` for ``topics`` in bag (log time) order."""
        connections = [c for c in self._reader.connections if c.topic in set(topics)]
        if not connections:
            return
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, timestamp, data = next(iterator)
            except StopIteration:
                return
            except Exception as error:  # truncated or corrupt storage
                raise DataError(f'bag {self.path} is corrupt or truncated: {error}') from error
            yield connection.topic, int(timestamp), bytes(data)

    def messages(self, topics):
        """Yield ``(topic, log_time_ns, message)`` deserialized, for ``topics``."""
        types = {topic: self.msgtype(topic) for topic in topics}
        for topic, timestamp, data in self.raw_messages(topics):
            yield topic, timestamp, deserialize(data, types[topic])


# -- writing --------------------------------------------------------------------------------------


class BagWriter:
    """Write a rosbag2 folder (mcap or sqlite3) of image topics; context manager.

    Topics are offered as reliable, keep-last 10, volatile, so ``ros2 bag play`` replays them
    with the QoS the node expects.
    """

    def __init__(self, path, storage='mcap', overwrite=False):
        """Create the bag at ``path``; an existing path is an error unless ``overwrite``."""
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.rosbag2 import Writer

        if storage not in STORAGES:
            raise ValueError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
        self.path = os.fspath(path)
        if os.path.lexists(self.path):
            if not overwrite:
                raise DataError(f'output bag {self.path} already exists '
                                '(remove it or use --overwrite)')
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                shutil.rmtree(self.path)
            else:
                os.remove(self.path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
            self._writer.open()
        except Exception as error:
            raise DataError(f'cannot create bag {self.path}: {error}') from error
        self._connections = {}
        self.counts = {}

    def add_topic(self, topic, msgtype=IMAGE_TYPE):
        """Declare a topic (once)."""
        if topic in self._connections:
            return
        from rosbags.interfaces import Qos
        from rosbags.interfaces import QosDurability
        from rosbags.interfaces import QosHistory
        from rosbags.interfaces import QosLiveliness
        from rosbags.interfaces import QosReliability
        from rosbags.interfaces import QosTime

        zero = QosTime(sec=0, nsec=0)
        qos = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                  zero, zero, QosLiveliness.AUTOMATIC, zero, False)
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), offered_qos_profiles=[qos])
        self.counts[topic] = 0

    def write(self, topic, timestamp_ns, data):
        """Write CDR bytes (or a rosbags message of the topic's type) at ``timestamp_ns``."""
        if topic not in self._connections:
            self.add_topic(topic)
        connection = self._connections[topic]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = serialize(data, connection.msgtype)
        self._writer.write(connection, int(timestamp_ns), data)
        self.counts[topic] += 1

    def close(self):
        """Finish the bag (writes metadata.yaml)."""
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
