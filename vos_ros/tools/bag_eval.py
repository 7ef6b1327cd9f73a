"""vos_bag_eval: replay a rosbag2 through vos_node over DDS, then score and report.

The bag's images are published with their original headers and (``--speed``-scaled) recorded
timing, reliable QoS, to the node's input; its ``/segmentation`` replies are matched to the
images by header stamp (repeated stamps: a reply that could answer more than one image is
left unscored, see ``Matcher``). Written to ``--out DIR``:

* ``masks/00000.png …``: one palette label map per replayed image, in bag order, at image size
  (an image the node never answered gets an empty mask and counts as dropped);
* ``report.json``: ``frames``, ``answered``, ``dropped``, ``latency_ms`` {p50, p95, max, mean},
  ``fps`` (answered / replay wall time), ``repeated_stamp_frames``, ``ambiguous_replies``,
  ``unscored_ambiguous_frames`` and, with ground truth, ``JF``, ``J``, ``F`` in percent by
  ``metrics.evaluate_video`` (as vos_eval: the annotation's objects, ``unscored_objects``
  entering later; first and last frame excluded), else those are null;
* ``latency.png``, ``jf_per_frame.png`` (with ground truth) and ``side_by_side.mp4``
  (image | prediction overlay | ground truth).

Unless ``--external``, a fresh ``vos_node`` of this installation is started on loopback
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a random ``ROS_DOMAIN_ID``, with the first
frame's ground truth (or ``--annotation``) as ``annotation_path``. With ``--external`` the
running node (``--node-name``) is reset and sent the annotation on its ``~/annotation`` topic,
in the current ROS environment.
"""

import argparse
import collections
import json
import logging
import os
import sys
import time

import numpy as np

from vos_ros.core.davis import fit_labels
from vos_ros.core.errors import DataError
from vos_ros.core.errors import VosError
from vos_ros.core.image_codec import compressed_to_rgb
from vos_ros.core.labels import read_labels
from vos_ros.core.labels import resize_labels
from vos_ros.core.labels import write_labels
from vos_ros.tools import bagio
from vos_ros.tools.cli import check_out_folder
from vos_ros.tools.cli import progress_bar
from vos_ros.tools.cli import sigterm_raises
from vos_ros.tools.cli import ToolParser

NODE_NAME = 'vos_node'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
EXIT_OK = 0
EXIT_ERROR = 1  # a bad value or file found after parsing (argparse exits 2), as every tool
EXIT_NODE_FAILED = 3
EXIT_INTERRUPTED = 130

_LOGGER = logging.getLogger('vos_bag_eval')


# -- the bag --------------------------------------------------------------------------------------


class BagPlan:
    """What will be replayed: image stamps and log times, ground truth per image."""

    def __init__(self):
        self.path = ''
        self.storage = ''
        self.image_topic = ''
        self.image_type = ''
        self.log_times = []       # bag time (ns) of each image, bag order
        self.stamps = []          # header stamp (ns) of each image
        self.frame_ids = []
        self.sizes = []           # (width, height) of each image
        self.ground_truth = []    # label map or None, per image
        self.ignored_topics = []
        self.gt_matched_by = None

    def __len__(self):
        return len(self.stamps)

    @property
    def gt_count(self):
        """Number of images that have ground truth."""
        return sum(gt is not None for gt in self.ground_truth)


def _image_header_and_size(msg, msgtype):
    """Return (stamp_ns, frame_id, (width, height)) of an Image or CompressedImage."""
    stamp = bagio.stamp_to_ns(msg.header.stamp)
    if msgtype == COMPRESSED_TYPE:
        rgb = compressed_to_rgb(msg.data, msg.format)
        return stamp, msg.header.frame_id, (rgb.shape[1], rgb.shape[0])
    return stamp, msg.header.frame_id, (int(msg.width), int(msg.height))


def scan_bag(path, image_topic='/image', gt_topic=bagio.GT_TOPIC, progress=True):
    """Read the bag once: image stamps, log times and sizes, ground-truth label maps."""
    plan = BagPlan()
    with bagio.BagReader(path) as reader:
        plan.path = reader.path
        plan.storage = reader.storage
        topics = reader.topics()
        if image_topic not in topics:
            listed = ', '.join(f'{t} ({v[0]})' for t, v in sorted(topics.items())) or 'none'
            raise DataError(f'bag {reader.path} has no topic {image_topic} '
                            f'(topics: {listed}); choose one with --image-topic')
        plan.image_topic = image_topic
        plan.image_type = topics[image_topic][0]
        if plan.image_type not in (bagio.IMAGE_TYPE, COMPRESSED_TYPE):
            raise DataError(f'{image_topic} holds {plan.image_type}, expected '
                            f'{bagio.IMAGE_TYPE} or {COMPRESSED_TYPE}')
        wanted = [image_topic]
        if gt_topic in topics:
            if topics[gt_topic][0] != bagio.IMAGE_TYPE:
                raise DataError(f'{gt_topic} holds {topics[gt_topic][0]}, expected '
                                f'{bagio.IMAGE_TYPE} label maps')
            wanted.append(gt_topic)
        plan.ignored_topics = sorted(set(topics) - set(wanted))
        gt_messages = []          # (header stamp, log time, labels)
        total = sum(topics[t][1] for t in wanted)
        bar = progress_bar(total=total, unit='msg', desc='reading bag', enabled=progress)
        try:
            for topic, log_time, msg in reader.messages(wanted):
                bar.update(1)
                if topic == image_topic:
                    stamp, frame_id, size = _image_header_and_size(msg, plan.image_type)
                    plan.log_times.append(log_time)
                    plan.stamps.append(stamp)
                    plan.frame_ids.append(frame_id)
                    plan.sizes.append(size)
                else:
                    gt_messages.append((bagio.stamp_to_ns(msg.header.stamp), log_time,
                                        bagio.image_labels(msg)))
        finally:
            bar.close()
    if not plan.stamps:
        raise DataError(f'bag {plan.path} has no messages on {image_topic}')
    plan.ground_truth = [None] * len(plan.stamps)
    if gt_messages:
        plan.ground_truth, plan.gt_matched_by = _pair_ground_truth(plan, gt_messages, gt_topic)
    for index, gt in enumerate(plan.ground_truth):
        if gt is not None and (gt.shape[1], gt.shape[0]) != plan.sizes[index]:
            plan.ground_truth[index] = resize_labels(gt, *plan.sizes[index])
    return plan


def _pair(keys, entries):
    """Give each image key the first unused entry with that key; return (list, pairs)."""
    pool = collections.defaultdict(collections.deque)
    for key, labels in entries:
        pool[key].append(labels)
    paired = [pool[key].popleft() if pool.get(key) else None for key in keys]
    return paired, sum(labels is not None for labels in paired)


def _pair_ground_truth(plan, gt_messages, gt_topic):
    """Pair ground truth with images by header stamp, else bag time, else order."""
    by_stamp, stamp_pairs = _pair(plan.stamps, [(m[0], m[2]) for m in gt_messages])
    if stamp_pairs == len(gt_messages):
        return by_stamp, 'stamp'
    by_time, time_pairs = _pair(plan.log_times, [(m[1], m[2]) for m in gt_messages])
    if time_pairs > stamp_pairs:
        _LOGGER.warning('%s header stamps do not match the image stamps: paired by bag time',
                        gt_topic)
        return by_time, 'bag time'
    if stamp_pairs:
        return by_stamp, 'stamp'
    if len(gt_messages) != len(plan.stamps):
        raise DataError(f'no {gt_topic} message matches an image by stamp or bag time and the '
                        f'counts differ ({len(gt_messages)} vs {len(plan.stamps)} images)')
    _LOGGER.warning('no %s message matches an image by stamp or bag time: pairing by order',
                    gt_topic)
    return [m[2] for m in gt_messages], 'order'


def iter_images(path, plan):
    """Yield ``(index, cdr_bytes_of_an_Image)`` in bag order (CompressedImage re-encoded)."""
    with bagio.BagReader(path) as reader:
        index = 0
        for _, _, data in reader.raw_messages([plan.image_topic]):
            if plan.image_type == COMPRESSED_TYPE:
                msg = bagio.deserialize(data, COMPRESSED_TYPE)
                rgb = compressed_to_rgb(msg.data, msg.format)
                image = bagio.image_msg(rgb, plan.stamps[index], msg.header.frame_id)
                data = bagio.serialize(image)
            yield index, data
            index += 1


def iter_rgb(path, plan):
    """Yield ``(index, rgb)`` in bag order."""
    for index, data in iter_images(path, plan):
        yield index, bagio.image_rgb(bagio.deserialize(data))


# -- replies and their matching -------------------------------------------------------------------


class Matcher:
    """Match replies to published images by header stamp.

    A reply answers an image of its stamp published before it arrived; replies of one stamp
    answer its images in order (the node never goes back to an older frame). When images
    share a stamp and the node answered only some of them (it keeps only the newest frame),
    a reply can fit more than one image: :meth:`resolve` keeps the pairs every fitting
    assignment agrees on and leaves the others ambiguous (unscored, counted in the report).
    While replaying, :meth:`reply` pairs each reply with the earliest image that fits.
    """

    def __init__(self, plan):
        self.plan = plan
        self.publish_times = {}                  # index -> monotonic publish time
        self.answers = {}                        # index -> label map
        self.latencies = {}                      # index -> seconds
        self.receive_times = {}                  # index -> monotonic receive time
        self.unmatched = 0
        self.ambiguous_replies = 0
        self.ambiguous_frames = []               # images a reply may or may not answer
        self._published = collections.defaultdict(list)   # stamp -> indices, in order
        self._replies = collections.defaultdict(list)     # stamp -> [(when, labels, index)]

    def published(self, index, when):
        """Record that image ``index`` was published at monotonic time ``when``."""
        self.publish_times[index] = when
        self._published[self.plan.stamps[index]].append(index)

    def reply(self, stamp_ns, labels, when):
        """Record a reply; return the image index it answers for now, or None if unmatched."""
        replies = self._replies[stamp_ns]
        previous = max((r[2] for r in replies if r[2] is not None), default=-1)
        index = next((i for i in self._published.get(stamp_ns, ())
                      if i > previous and self.publish_times[i] <= when), None)
        replies.append((when, labels, index))
        if index is None:
            self.unmatched += 1
            return None
        self._record(index, labels, when)
        return index

    def _record(self, index, labels, when):
        self.answers[index] = labels
        self.receive_times[index] = when
        self.latencies[index] = when - self.publish_times[index]

    def may_be_answered(self, index):
        """True if image ``index`` is answered, or a reply that may answer it has arrived."""
        if index in self.answers:
            return True
        published = self.publish_times.get(index)
        return published is not None and any(
            when >= published for when, _, _ in self._replies.get(self.plan.stamps[index], ()))

    def resolve(self):
        """Settle repeated stamps: keep certain pairs, leave ambiguous ones unscored."""
        ambiguous = set()
        for stamp, replies in self._replies.items():
            images = self._published.get(stamp, [])
            matched = [(when, labels, index) for when, labels, index in replies
                       if index is not None]
            if len(images) < 2 or not matched:
                continue
            # The latest image each reply can answer, keeping the order of later replies;
            # it exists because the earliest fits (reply() found them) do.
            latest = []
            bound = len(self.plan.stamps)
            for when, _, _ in reversed(matched):
                bound = max(i for i in images if i < bound and self.publish_times[i] <= when)
                latest.append(bound)
            for (when, labels, earliest), last in zip(matched, reversed(latest)):
                if last != earliest:
                    # Any image from its earliest to its latest fit: unknown which.
                    self.answers.pop(earliest, None)
                    self.latencies.pop(earliest, None)
                    self.receive_times.pop(earliest, None)
                    ambiguous.update(i for i in images if earliest <= i <= last)
                    self.ambiguous_replies += 1
        self.ambiguous_frames = sorted(ambiguous - set(self.answers))
        return self.ambiguous_frames

    @property
    def answered(self):
        """Number of published images answered."""
        return len(self.answers)


# -- the ROS side ---------------------------------------------------------------------------------


def send_annotation(ros, node_name, labels, stamp_ns, timeout):
    """Reset an external node (if it offers the service) and publish the annotation."""
    from builtin_interfaces.msg import Time

    if ros.reset(timeout, service_timeout=min(timeout, 5.0)) is None:
        _LOGGER.warning('no answer from /%s/reset: the node keeps its previous objects',
                        node_name)
    sec, nanosec = bagio.ns_to_sec_nsec(stamp_ns)
    try:
        ros.publish_annotation(labels, Time(sec=sec, nanosec=nanosec), timeout)
    except VosError as error:
        raise VosError(f'{error} (see --node-name)') from error


# -- the replay -----------------------------------------------------------------------------------


class Replay:
    """Outcome of one replay."""

    def __init__(self, plan):
        self.matcher = Matcher(plan)
        self.published = 0
        self.wall_s = 0.0
        self.interrupted = False
        self.node_failure = None
        self.raw_replies = []     # (receive time ns, cdr) for --record
        self.started = None
        self.cpu_s = 0.0          # CPU time this process spent replaying (all threads)
        self.node_diagnostics = None  # NodeDiagnostics.summary() of the node, after the run


def _drain(ros, replay, keep_raw):
    while ros.raw:
        when, wall_ns, data = ros.raw.popleft()
        try:
            msg = bagio.deserialize(data)
            labels = bagio.image_array(msg)
        except DataError as error:
            _LOGGER.warning('ignoring a malformed reply: %s', error)
            replay.matcher.unmatched += 1
            continue
        if labels.ndim == 3:
            labels = labels[:, :, 0]
        replay.matcher.reply(bagio.stamp_to_ns(msg.header.stamp), labels, when)
        if keep_raw:
            replay.raw_replies.append((wall_ns, data))


def run_replay(args, plan, ros, node, annotation, progress=True):
    """Publish the images with their timing and collect the replies; returns a Replay."""
    replay = Replay(plan)
    keep_raw = bool(args.record)
    if not ros.wait_for_node(args.startup_timeout, node):
        if node is not None and node.poll() is not None:
            raise VosError(f'vos_node exited with code {node.poll()} before it was ready:\n'
                           + node.tail())
        where = ('' if node is None else f' (node log: {node.log_path})')
        raise VosError(f'no node on {args.node_image_topic} / {args.segmentation_topic} '
                       f'after {args.startup_timeout:g} s{where}')
    if args.external and annotation is not None:
        send_annotation(ros, args.node_name, annotation, plan.stamps[0], args.startup_timeout)
    else:
        # A reliable writer only sends to readers it has discovered; give discovery of the
        # reverse direction (node -> us) a moment too.
        time.sleep(0.5)

    bar = progress_bar(total=len(plan), unit='frame', desc='replaying', enabled=progress)
    start = time.monotonic()
    cpu_start = time.process_time()
    replay.started = start
    last_event = start
    try:
        for index, data in iter_images(plan.path, plan):
            if args.lockstep and index > 0:
                wait_until = time.monotonic() + args.timeout
                while (replay.matcher.answered + replay.matcher.unmatched < index
                       and time.monotonic() < wait_until):
                    _drain(ros, replay, keep_raw)
                    time.sleep(0.002)
                due = time.monotonic()
            else:
                due = start + (plan.log_times[index] - plan.log_times[0]) / 1e9 / args.speed
            while True:
                _drain(ros, replay, keep_raw)
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, 0.005))
            if node is not None and node.poll() is not None:
                replay.node_failure = (f'vos_node exited with code {node.poll()} during the '
                                       f'replay:\n{node.tail()}')
                break
            now = time.monotonic()
            replay.matcher.published(index, now)
            ros.publish_raw(data)
            replay.published = index + 1
            last_event = now
            bar.update(1)
            bar.set_postfix(answered=replay.matcher.answered, refresh=False)
        # Trailing replies: wait while they keep coming, up to --timeout of silence.
        answered = replay.matcher.answered
        while replay.node_failure is None and replay.matcher.answered < replay.published:
            _drain(ros, replay, keep_raw)
            if replay.matcher.answered != answered:
                answered = replay.matcher.answered
                last_event = time.monotonic()
            # The node keeps only the newest frame: once the last image is answered, the
            # older unanswered ones were dropped and will never come.
            if replay.matcher.may_be_answered(replay.published - 1):
                break
            if time.monotonic() - last_event > args.timeout:
                break
            time.sleep(0.005)
    except KeyboardInterrupt:
        replay.interrupted = True
    finally:
        bar.close()
    try:
        _drain(ros, replay, keep_raw)
    except KeyboardInterrupt:
        replay.interrupted = True
    replay.matcher.resolve()
    end = max([start] + list(replay.matcher.receive_times.values()))
    if replay.published and not replay.matcher.receive_times:
        end = time.monotonic()
    replay.wall_s = end - start
    replay.cpu_s = time.process_time() - cpu_start
    return replay


# -- outputs --------------------------------------------------------------------------------------


def _percent(value):
    return None if value is None or not np.isfinite(value) else round(100.0 * value, 3)


def predictions(plan, replay):
    """Return the label map of each replayed image (empty where unanswered), at image size."""
    result = []
    for index in range(replay.published):
        width, height = plan.sizes[index]
        labels = replay.matcher.answers.get(index)
        if labels is None:
            labels = np.zeros((height, width), np.uint8)
        elif labels.shape != (height, width):
            labels = resize_labels(labels, width, height)
        result.append(labels)
    return result


def score(plan, preds, annotation=None, skip=()):
    """Score by ``metrics.evaluate_video`` (the rule vos_eval shares); None when unscorable.

    ``annotation``: the label map the node was given (default: the first ground truth); its
    objects are scored. ``skip``: images whose answer is unknown (ambiguous repeated stamps).
    Returns the summary (with ``frames``, the scored indices) or None.
    """
    from vos_ros.core.metrics import evaluate_video

    if annotation is None:
        annotation = next((gt for gt in plan.ground_truth if gt is not None), None)
    if annotation is None or not preds:
        return None
    return evaluate_video(plan.ground_truth[:len(preds)], preds, annotation, skip)


def _latency_stats(latencies):
    if not latencies:
        return {'p50': None, 'p95': None, 'max': None, 'mean': None}
    values = np.asarray(latencies) * 1000.0
    return {'p50': round(float(np.percentile(values, 50)), 3),
            'p95': round(float(np.percentile(values, 95)), 3),
            'max': round(float(values.max()), 3),
            'mean': round(float(values.mean()), 3)}


def plot_latency(path, plan, replay):
    """Latency of each answered image over replay time; unanswered ones marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    matcher = replay.matcher
    figure, axis = plt.subplots(figsize=(8, 3.5), dpi=100)
    answered = sorted(matcher.latencies)
    times = [matcher.publish_times[i] - replay.started for i in answered]
    axis.plot(times, [matcher.latencies[i] * 1000.0 for i in answered], '.-', lw=0.8,
              label=f'answered ({len(answered)})')
    missing = [i for i in range(replay.published) if i not in matcher.answers]
    if missing:
        axis.plot([matcher.publish_times[i] - replay.started for i in missing],
                  [0.0] * len(missing), 'rx', label=f'unanswered ({len(missing)})')
    axis.set_xlabel('replay time [s]')
    axis.set_ylabel('latency [ms]')
    axis.set_title('vos_node latency (image published -> segmentation received)')
    axis.grid(alpha=0.3)
    axis.legend(loc='upper right')
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_jf(path, summary):
    """J, F and J&F per scored frame (mean over objects)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    j_frames = np.asarray(summary['J_frames'])
    f_frames = np.asarray(summary['F_frames'])
    scored = summary['frames']
    j_mean = j_frames.mean(axis=0) * 100.0
    f_mean = f_frames.mean(axis=0) * 100.0
    figure, axis = plt.subplots(figsize=(8, 3.5), dpi=100)
    axis.plot(scored, (j_mean + f_mean) / 2.0, '-', lw=1.5, label='J&F')
    axis.plot(scored, j_mean, '--', lw=0.8, label='J (IoU)')
    axis.plot(scored, f_mean, ':', lw=0.8, label='F (boundary)')
    axis.set_ylim(0, 100)
    axis.set_xlabel('frame (bag order)')
    axis.set_ylabel('%')
    axis.set_title(f'J&F per frame (sequence J&F {100.0 * summary["JF"]:.1f})')
    axis.grid(alpha=0.3)
    axis.legend(loc='lower left')
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_video(path, bag_path, plan, preds, fps, answered=None, progress=True):
    """Write image | prediction overlay | ground truth; return the file written."""
    from vos_ros.core.labels import overlay
    from vos_ros.core.video import side_by_side
    from vos_ros.core.video import VideoWriter

    bar = progress_bar(total=len(preds), unit='frame', desc='video', enabled=progress)
    with VideoWriter(path, fps=fps) as writer:
        for index, rgb in iter_rgb(bag_path, plan):
            if index >= len(preds):
                break
            gt = plan.ground_truth[index]
            third = (overlay(rgb, gt) if gt is not None else np.zeros_like(rgb))
            writer.write(side_by_side(
                [rgb, overlay(rgb, preds[index]), third],
                labels=[f'image {index}',
                        'prediction' if answered is None or index in answered else 'no answer',
                        'ground truth' if gt is not None else 'no ground truth']))
            bar.update(1)
    bar.close()
    return writer.path


def record_bag(path, replay, topic, storage):
    """Write the node's replies (raw, at their receive time) into a bag."""
    with bagio.BagWriter(path, storage, overwrite=True) as writer:
        writer.add_topic(topic)
        for wall_ns, data in replay.raw_replies:
            writer.write(topic, wall_ns, data)
    return len(replay.raw_replies)


def write_outputs(args, plan, replay, annotation_path, node, domain, progress=True,
                  annotation=None):
    """Write masks, report.json, plots, video (and the recorded bag); return the report."""
    out = args.out
    preds = predictions(plan, replay)
    mask_dir = os.path.join(out, 'masks')
    os.makedirs(mask_dir, exist_ok=True)
    for name in os.listdir(mask_dir):
        # A previous run's extra masks would be mistaken for this run's.
        if name.endswith('.png') and name[:-4].isdigit():
            os.remove(os.path.join(mask_dir, name))
    for index, labels in enumerate(progress_bar(preds, unit='mask', desc='masks',
                                                enabled=progress)):
        write_labels(os.path.join(mask_dir, f'{index:05d}.png'), labels)
    ambiguous = replay.matcher.ambiguous_frames
    summary = score(plan, preds, annotation, skip=ambiguous)
    scored = summary['frames'] if summary else []
    matcher = replay.matcher
    latencies = [matcher.latencies[i] for i in sorted(matcher.latencies)]
    # An ambiguous reply answered one of its images, which one is unknown.
    answered = matcher.answered + matcher.ambiguous_replies
    stamp_counts = collections.Counter(plan.stamps[:replay.published])
    report = {
        'bag': os.path.abspath(plan.path),
        'storage': plan.storage,
        'image_topic': plan.image_topic,
        'image_type': plan.image_type,
        'ignored_topics': plan.ignored_topics,
        'frames_in_bag': len(plan),
        'frames': replay.published,
        'answered': answered,
        'dropped': replay.published - answered,
        'unmatched_replies': matcher.unmatched,
        'repeated_stamp_frames': sum(n for n in stamp_counts.values() if n > 1),
        'ambiguous_replies': matcher.ambiguous_replies,
        'unscored_ambiguous_frames': ambiguous,
        'JF': _percent(summary['JF']) if summary else None,
        'J': _percent(summary['J']) if summary else None,
        'F': _percent(summary['F']) if summary else None,
        'J_recall': _percent(summary['J_recall']) if summary else None,
        'F_recall': _percent(summary['F_recall']) if summary else None,
        'J_decay': _percent(summary['J_decay']) if summary else None,
        'F_decay': _percent(summary['F_decay']) if summary else None,
        'objects': summary['object_ids'] if summary else [],
        'unscored_objects': summary['unscored_objects'] if summary else [],
        'ground_truth_frames': plan.gt_count,
        'ground_truth_paired_by': plan.gt_matched_by,
        'scored_frames': len(scored),
        'latency_ms': _latency_stats(latencies),
        'fps': round(answered / replay.wall_s, 3) if replay.wall_s > 0 else None,
        'replay_wall_s': round(replay.wall_s, 3),
        'replay_cpu_s': round(replay.cpu_s, 3),
        'speed': None if args.lockstep else args.speed,
        'lockstep': bool(args.lockstep),
        'interrupted': replay.interrupted,
        'node_failure': replay.node_failure,
        'annotation': os.path.abspath(annotation_path) if annotation_path else None,
        'node': {'external': bool(args.external),
                 'command': node.args if node is not None else None,
                 'ros_domain_id': domain},
        # what the node said on /diagnostics: the last report's values (backend, device,
        # target_confidence and effective_target, path shares, its own latency figures) and
        # how many reports showed the target lowered to keep up
        'node_diagnostics': replay.node_diagnostics,
    }
    if summary is None and plan.gt_count:
        report['note'] = 'ground truth only on the annotated first frame: timing only'
    elif summary is not None and plan.gt_count < replay.published:
        report['note'] = (f'ground truth on {plan.gt_count} of {replay.published} frames: '
                          'scored on those (the first and last frame excluded)')
    if replay.published:
        plot_latency(os.path.join(out, 'latency.png'), plan, replay)
    if summary is not None:
        plot_jf(os.path.join(out, 'jf_per_frame.png'), summary)
    if replay.published and not args.no_video:
        span = (plan.log_times[-1] - plan.log_times[0]) / 1e9
        fps = (len(plan) - 1) / span if span > 0 and len(plan) > 1 else 10.0
        report['video'] = write_video(os.path.join(out, 'side_by_side.mp4'), plan.path, plan,
                                      preds, fps, set(matcher.answers), progress)
    if args.record:
        count = record_bag(args.record, replay, args.segmentation_topic, args.record_storage)
        report['recorded'] = {'bag': os.path.abspath(args.record), 'messages': count}
    with open(os.path.join(out, 'report.json'), 'w', encoding='utf-8') as handle:
        json.dump(report, handle, indent=2)
        handle.write('\n')
    return report


# -- command line ---------------------------------------------------------------------------------


def build_parser():
    """Return the argument parser of vos_bag_eval."""
    parser = ToolParser(
        prog='vos_bag_eval', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog='Example: vos_bag_eval blackswan_bag --out out/blackswan '
               "--node-args='-p backend:=flow'")
    parser.add_argument('bag', help='rosbag2 folder (mcap or sqlite3)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--image-topic', default='/image', help='image topic in the bag')
    parser.add_argument('--gt-topic', default=bagio.GT_TOPIC,
                        help='ground-truth label map topic in the bag (0/255 = object 1)')
    parser.add_argument('--annotation', help='first-frame label map PNG to use instead of the '
                        "first image's ground truth")
    parser.add_argument('--speed', type=float, default=1.0,
                        help='playback rate factor (1.0 = recorded timing)')
    parser.add_argument('--lockstep', action='store_true',
                        help='send each image once the previous one is answered (or after '
                        '--timeout): scores the model without dropping frames')
    parser.add_argument('--node-args', action='append', default=[],
                        help="extra ROS arguments for vos_node, e.g. --node-args='-p "
                        "backend:=flow -p device:=cpu' (repeatable)")
    parser.add_argument('--external', action='store_true',
                        help='use an already running node (current ROS environment)')
    parser.add_argument('--node-name', default=NODE_NAME,
                        help='name of the --external node (for ~/annotation and ~/reset)')
    parser.add_argument('--node-image-topic', default='/image',
                        help="topic the images are published on (the node's input)")
    parser.add_argument('--segmentation-topic', default='/segmentation',
                        help="the node's label map topic")
    parser.add_argument('--record', metavar='OUT_BAG',
                        help="write the node's label maps into this bag (replaced if it exists)")
    parser.add_argument('--record-storage', choices=bagio.STORAGES, default='mcap',
                        help='storage of the --record bag')
    parser.add_argument('--startup-timeout', type=float, default=120.0,
                        help='seconds to wait for the node to come up')
    parser.add_argument('--timeout', type=float, default=10.0,
                        help='seconds without a reply before giving up on the remaining '
                        'images (after the last one; per image with --lockstep)')
    parser.add_argument('--no-video', action='store_true', help='skip side_by_side.mp4')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    return parser


def _check_args(args):
    if not args.speed > 0:
        raise ValueError(f'--speed must be > 0, got {args.speed}')
    if not args.timeout > 0 or not args.startup_timeout > 0:
        raise ValueError('--timeout and --startup-timeout must be > 0')
    check_out_folder(args.out)


def _annotation(args, plan):
    if args.annotation:
        width, height = plan.sizes[0]
        # the node would refuse a mask of another aspect ratio on every frame: say it now
        return fit_labels(read_labels(args.annotation), (height, width), args.annotation,
                          lambda line: _LOGGER.warning('%s: %s', args.annotation, line))
    first = plan.ground_truth[0]
    if (first is None or not first.any()) and args.external:
        _LOGGER.warning('no annotation for the first image: the external node keeps what it '
                        'is tracking (not reset)')
        return None
    if first is None or not first.any():
        raise DataError(f'the first image of {plan.path} has no ground-truth object on '
                        f'{args.gt_topic}; give the first-frame mask with --annotation')
    return first


def print_summary(report, out):
    """Print the figures a user looks at first."""
    lat = report['latency_ms']
    line = (f'{report["answered"]}/{report["frames"]} frames answered '
            f'({report["dropped"]} dropped), fps {report["fps"]}, latency ms p50 {lat["p50"]} '
            f'p95 {lat["p95"]} max {lat["max"]}')
    if report['JF'] is not None:
        line += f'; J&F {report["JF"]:.2f} (J {report["J"]:.2f}, F {report["F"]:.2f})'
    else:
        line += '; no ground truth: timing only'
    print(line)
    if report['unmatched_replies']:
        print(f'warning: {report["unmatched_replies"]} replies matched no published image '
              'stamp (does the node copy the input header?)', file=sys.stderr)
    if report['ambiguous_replies']:
        print(f'warning: {report["repeated_stamp_frames"]} images share header stamps; '
              f'{report["ambiguous_replies"]} replies could answer more than one of them: '
              f'frames {report["unscored_ambiguous_frames"]} left unscored', file=sys.stderr)
    if report['unscored_objects']:
        print(f'note: object(s) {report["unscored_objects"]} appear only after the first frame: '
              'not scored (the node is given the first-frame mask only)', file=sys.stderr)
    diagnostics = report.get('node_diagnostics') or {}
    from vos_ros.ros.client import describe_node_report

    line = describe_node_report(diagnostics)
    if line:
        print(line)
    if diagnostics.get('lowered_messages'):
        print(f'note: the node fell behind the replay and lowered target_confidence (to '
              f'{diagnostics["lowest_effective_target"]:g} at the lowest) in '
              f'{diagnostics["lowered_messages"]} of its {diagnostics["messages"]} diagnostics '
              'reports: part of the run was segmented at less than the requested effort',
              file=sys.stderr)
    print(f'wrote {out}/report.json, masks/, latency.png'
          + (', annotation.png' if os.path.exists(os.path.join(out, 'annotation.png')) else '')
          + (', jf_per_frame.png' if report['JF'] is not None else '')
          + (f', {os.path.basename(report["video"])}' if report.get('video') else '')
          + (', node.log' if os.path.exists(os.path.join(out, 'node.log')) else ''))


def main(argv=None):
    """Run vos_bag_eval; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(levelname)s: %(message)s')
    # kill and launch stop with SIGTERM: as Ctrl-C, stop the node and keep what it answered
    try:
        with sigterm_raises(KeyboardInterrupt):
            return _run(args)
    except KeyboardInterrupt:  # while the summary was printed: the report is written
        print('vos_bag_eval: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args):
    """Replay, score and report as ``args`` say; return the exit code."""
    progress = not args.quiet
    node = None
    ros = None
    try:
        _check_args(args)
        plan = scan_bag(args.bag, args.image_topic, args.gt_topic, progress)
        annotation = _annotation(args, plan)
        os.makedirs(args.out, exist_ok=True)
        annotation_path = None
        if annotation is not None:
            annotation_path = os.path.join(args.out, 'annotation.png')
            write_labels(annotation_path, annotation)
        # Imported here: scanning and scoring a bag need no ROS installation.
        from vos_ros.ros.client import check_ros_environment
        from vos_ros.ros.client import NodeDiagnostics
        from vos_ros.ros.client import SegmentationClient
        from vos_ros.ros.client import start_node
        from vos_ros.ros.client import use_local_dds

        if not args.external:
            use_local_dds()
        domain = check_ros_environment()
        if not args.external:
            remappings = {}
            if args.node_image_topic != '/image':
                remappings['image'] = args.node_image_topic
            if args.segmentation_topic != '/segmentation':
                remappings['segmentation'] = args.segmentation_topic
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the node after
            # collecting what it already answered.
            node = start_node({'annotation_path': os.path.abspath(annotation_path)},
                              remappings, log_path=os.path.join(args.out, 'node.log'),
                              extra_args=args.node_args, own_session=True)
        try:
            # A deep writer history: a reliable writer drops unacknowledged samples that fall
            # out of it, so a reader stalled for a moment (loaded machine) would silently lose
            # frames.
            ros = SegmentationClient(args.node_image_topic, args.segmentation_topic,
                                     args.node_name, f'vos_bag_eval_{os.getpid()}', depth=50,
                                     answer_depth=100, raw_answers=True)
        except RuntimeError as error:  # rclpy's RCLError: bad ROS environment or arguments
            raise VosError(f'cannot start ROS 2 (ROS_DOMAIN_ID={domain}): {error}') from error
        diagnostics = NodeDiagnostics(ros.node, args.node_name)
        replay = run_replay(args, plan, ros, node, annotation, progress)
        # The node's own word on the run (backend, targets, path shares): one more report
        # after the last frame (every diagnostics_period, 1 s by default).
        diagnostics.fresh(timeout=2.5)
        replay.node_diagnostics = diagnostics.summary()
        ros.close()
        ros = None
        if node is not None:
            node.stop()
        report = write_outputs(args, plan, replay, annotation_path, node, domain, progress,
                               annotation)
    except (VosError, ValueError, OSError) as error:
        print(f'vos_bag_eval: error: {error}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print('vos_bag_eval: interrupted; no report written', file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if ros is not None:
            ros.close()
        if node is not None:
            node.stop()
    print_summary(report, args.out)
    if replay.node_failure:
        print(f'vos_bag_eval: error: {replay.node_failure}', file=sys.stderr)
        return EXIT_NODE_FAILED
    if replay.published and not replay.matcher.answered and not replay.interrupted:
        print(f'vos_bag_eval: error: the node answered none of the {replay.published} images '
              f'(node log: {node.log_path if node else "external node"})', file=sys.stderr)
        return EXIT_NODE_FAILED
    if replay.interrupted:
        print(f'vos_bag_eval: interrupted after {replay.published} of {len(plan)} images; '
              'the report covers those', file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
