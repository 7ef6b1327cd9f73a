"""The small interface every segmentation backend implements.

A backend sees images at the session's working size and keeps its own memory of the stream.
Probabilities are float32 arrays shaped (K + 1, h, w): channel 0 is background and channel
i is the session's i-th object (the session owns object ids; backends only see channels).
"""

import abc


class Backend(abc.ABC):
    """Segment a stream of frames given soft masks on some of them."""

    #: Registry name (``backend`` parameter value).
    name = 'base'
    #: Working resolution (shorter side) a session uses when its config leaves it unset;
    #: 0 = the input size.
    default_resolution = 0

    @abc.abstractmethod
    def reset(self):
        """Forget everything about the stream."""

    @abc.abstractmethod
    def memorize(self, image, probs):
        """Take ``probs`` as the truth for ``image`` (a given mask or a confident result).

        ``image`` is h×w×3 uint8 RGB at working size; ``probs`` is (K + 1)×h×w float32.
        The number of channels may differ from the last call: objects were added or removed,
        and the backend must adopt the new channel layout.
        """

    @abc.abstractmethod
    def propagate(self, image):
        """Return (K + 1)×h×w float32 probabilities for ``image`` (the next frame)."""

    def warm_up(self, width, height, objects):
        """Run once at working size ``width``×``height`` with ``objects`` objects, untimed.

        Networks run their first calls at a new input shape several times slower (kernel
        selection, graph profiling); a live node calls this before its first frame so that
        the camera's first frames are answered on time. The default does nothing.
        """

    def describe(self):
        """Return a short dict describing the backend (for logs and diagnostics).

        ``backend`` is the name; a backend with a network adds ``resolution``, the shorter side
        in pixels of the network's input, to which it scales the frames it is given. A
        session's working size (``SessionConfig.resolution``) is another size, not the
        backend's: the session resizes frames to it before the backend sees them.
        """
        return {'backend': self.name}
