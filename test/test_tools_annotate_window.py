"""The annotation window driven as a user would: Xvfb + xdotool (``apt-get install xvfb xdotool``).

The test draws a polygon (object 1), paints a brush stroke with object 3 and undoes it, switches
to object 2, drags a box around a second object, saves, checks the PNG pixel-wise and keeps
screenshots in ``test-artifacts/`` (``annotate_window.png``, ``annotate_window_help.png``;
``VOS_TEST_ARTIFACTS`` overrides the folder). It skips, with the reason, only when Xvfb or
xdotool is missing.
"""

import ctypes
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from vos_ros.core.labels import read_labels

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = pathlib.Path(os.environ.get('VOS_TEST_ARTIFACTS', ROOT / 'test-artifacts'))

pytestmark = pytest.mark.skipif(
    not (shutil.which('Xvfb') and shutil.which('xdotool')),
    reason='Xvfb and xdotool are needed to drive the window (apt-get install xvfb xdotool)')


def _die_with_parent():
    """Have the kernel stop Xvfb if pytest is killed before the fixture's teardown."""
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


@pytest.fixture(scope='module')
def display():
    """Start a private Xvfb server for the module; yield its DISPLAY name.

    One server for all tests: Tk keeps its X connection after ``destroy()``, and Xlib ends the
    process when a server it still talks to goes away between tests.
    """
    for number in range(90 + os.getpid() % 50, 200):
        if not os.path.exists(f'/tmp/.X11-unix/X{number}') and \
                not os.path.exists(f'/tmp/.X{number}-lock'):
            break
    name = f':{number}'
    server = subprocess.Popen(['Xvfb', name, '-screen', '0', '1024x768x24', '-nolisten', 'tcp'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 10
    while not os.path.exists(f'/tmp/.X11-unix/X{number}'):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.skip(f'Xvfb could not start on {name}')
        time.sleep(0.05)
    yield name
    server.terminate()
    server.wait(timeout=10)


def xdotool(display_name, *args):
    env = dict(os.environ, DISPLAY=display_name)
    result = subprocess.run(['xdotool'] + [str(a) for a in args], env=env, capture_output=True,
                            text=True, timeout=20)
    return result.stdout.strip()


def wait_for_window(display_name, process, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f'annotate exited early: {process.communicate()}')
        found = xdotool(display_name, 'search', '--name', 'vos_ros annotate')
        if found:
            return found.split()[0]
        time.sleep(0.2)
    raise AssertionError('the annotation window did not appear')


def screenshot(display_name, window, path):
    """Save the window's pixels (PIL grabs the X screen through XCB)."""
    from PIL import ImageGrab

    shot = ImageGrab.grab(xdisplay=display_name)
    geometry = xdotool(display_name, 'getwindowgeometry', '--shell', window)
    size = dict(line.split('=') for line in geometry.splitlines())
    left, top = int(size['X']), int(size['Y'])
    shot.crop((left, top, left + int(size['WIDTH']), top + int(size['HEIGHT']))).save(path)


def scene():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 8, (120, 160, 3)), 0, 255).astype(np.uint8)
    disc = np.zeros((120, 160), np.uint8)
    cv2.circle(disc, (115, 65), 22, 1, -1)
    image[20:71, 20:61] = (200, 40, 40)
    image[disc > 0] = (40, 40, 220)
    return image, disc > 0


def test_polygon_box_undo_switch_object_save(tmp_path, display):
    image, disc = scene()
    frame_path = tmp_path / 'frame.png'
    cv2.imwrite(str(frame_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / 'mask.png'
    env = dict(os.environ, DISPLAY=display)
    process = subprocess.Popen([sys.executable, '-m', 'vos_ros.tools.annotate', '--image',
                                str(frame_path), '--out', str(out)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = wait_for_window(display, process)
        time.sleep(0.5)

        def act(*args):
            xdotool(display, *args)
            time.sleep(0.15)

        # Polygon (the default tool) with object 1: four vertices, Enter closes it.
        vertices = [(20, 20), (60, 20), (60, 70), (20, 70)]
        for x, y in vertices:
            act('mousemove', '--window', window, x, y, 'click', 1)
        act('key', '--window', window, 'Return')
        # A brush stroke with object 3, then undo: it must not reach the file.
        act('key', '--window', window, '3')
        act('key', '--window', window, 'b')
        act('mousemove', '--window', window, 10, 100, 'mousedown', 1)
        act('mousemove', '--window', window, 70, 105, 'mouseup', 1)
        act('key', '--window', window, 'u')
        # Box tool with object 2 around the disc.
        act('key', '--window', window, '2')
        act('key', '--window', window, 'r')
        act('mousemove', '--window', window, 93, 43, 'mousedown', 1)
        act('mousemove', '--window', window, 120, 70)
        act('mousemove', '--window', window, 137, 87, 'mouseup', 1)
        time.sleep(2.0)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot(display, window, ARTIFACTS / 'annotate_window.png')
        act('key', '--window', window, 'h')
        time.sleep(0.5)
        screenshot(display, window, ARTIFACTS / 'annotate_window_help.png')
        act('key', '--window', window, 'h')
        act('key', '--window', window, 'w')
        deadline = time.monotonic() + 15
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        act('key', '--window', window, 'q')
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert 'saved' in stdout
    labels = read_labels(out)
    assert labels.shape == image.shape[:2]
    polygon = np.zeros(labels.shape, np.uint8)
    cv2.fillPoly(polygon, [np.array(vertices, np.int32)], 1)
    assert np.array_equal(labels == 1, polygon > 0)
    assert not (labels == 3).any()
    found = labels == 2
    assert (found & disc).sum() / (found | disc).sum() > 0.85
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (ARTIFACTS / 'annotate_window.png').stat().st_size > 1000


@pytest.fixture
def window(display, tmp_path):
    """An AnnotationWindow in this process on a three-frame in-memory source."""
    import argparse
    import tkinter

    from vos_ros.tools.annotate import ArraySource
    from vos_ros.tools.annotate_window import AnnotationWindow

    frames = []
    for shift in (0, 10, 20):
        image, _ = scene()
        frames.append(np.roll(image, shift, axis=1))
    args = argparse.Namespace(out=str(tmp_path / 'mask.png'), force=False, frame=0,
                              save_frame=None, annotation_topic='/vos_node/annotation',
                              timeout=1.0)
    root = tkinter.Tk(screenName=display)
    published = []
    editor = AnnotationWindow(root, ArraySource(frames, 'test'), args,
                              publish=lambda labels, frame_id: published.append(labels.copy()))
    editor.published = published
    editor.frames = frames
    yield editor
    root.destroy()


def test_view_mapping_survives_zoom_and_pan(window):
    window.zoom_by(2.0, 0, 0)
    assert window.to_canvas(10, 10) == pytest.approx((20, 20))
    window.offset = [window.offset[0] - 37, window.offset[1] + 12]
    for point in ((0, 0), (33.5, 71.25), (159, 119)):
        assert window.to_image(*window.to_canvas(*point)) == pytest.approx(point)
    window.reset_view()
    assert window.to_canvas(5, 7) == pytest.approx((5, 7))


def test_polygon_undo_redo_and_eraser(window):
    window.polygon = [(10, 10), (50, 10), (50, 40)]
    window.close_polygon()
    drawn = window.labels.copy()
    assert (drawn == 1).sum() > 500
    window.undo()
    assert not window.labels.any()
    window.redo()
    assert np.array_equal(window.labels, drawn)
    window.tool = 'eraser'
    window.radius = 3
    window.push_undo()
    window.paint_stroke([(45, 15), (45, 15)])
    assert window.labels[15, 45] == 0
    assert window.labels[12, 20] == 1


def test_objects_have_their_own_ids_and_colours(window):
    from vos_ros.core.labels import DAVIS_PALETTE

    for object_id, x in ((4, 10), (9, 60)):
        window.object_id = object_id
        window.tool = 'brush'
        window.radius = 2
        window.paint_stroke([(x, 100)])
    assert window.labels[100, 10] == 4 and window.labels[100, 60] == 9
    window.opacity_index = 2  # 100 %: the overlay shows the palette colour itself
    assert np.array_equal(window.composite()[100, 60], DAVIS_PALETTE[9])
    window.opacity_index = 3  # 0 %: the frame itself
    assert np.array_equal(window.composite(), window.image)


def test_frames_step(window):
    window.step_frame(2)
    assert window.frame_index == 2 and np.array_equal(window.image, window.frames[2])
    window.step_frame(1)
    assert window.frame_index == 2 and 'no frame' in window.message
    window.step_frame(-1)
    assert np.array_equal(window.image, window.frames[1])


def test_scribble_refine_grows_the_object(window):
    image, disc = scene()
    window.image = image
    part = disc.copy()
    part[:, 115:] = False
    window.labels[part] = 1
    window.radius = 2
    window.apply_scribble([(125, 60), (128, 70)], positive=True)
    found = window.labels == 1
    assert (found & disc).sum() > 1.3 * part.sum()
    assert (found & ~disc).sum() < 0.1 * disc.sum()


def test_save_publish_and_overwrite_guard(window, tmp_path):
    assert not window.save()  # empty mask: nothing written
    window.labels[5:9, 5:9] = 2
    pathlib.Path(window.args.out).write_bytes(b'old')
    assert not window.save()
    assert pathlib.Path(window.args.out).read_bytes() == b'old'
    window.args.force = True
    assert window.save(publish=True)
    assert np.array_equal(read_labels(window.args.out), window.labels)
    assert len(window.published) == 1 and np.array_equal(window.published[0], window.labels)


@pytest.fixture(scope='module')
def tiny_box_model(tmp_path_factory):
    """A randomly initialised box model file (the plumbing, not the shipped weights)."""
    torch = pytest.importorskip('torch')
    from vos_ros.core import model_io
    from vos_ros.core.models.box_net import BoxNet

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp('model') / 'box.pt'
    model_io.save_model(torch.jit.script(BoxNet(width=16, pretrained=False).eval()), path, {
        'kind': 'box', 'mean': [123.7, 116.3, 103.5], 'std': [58.4, 57.1, 57.4], 'stride': 2,
        'input_multiple': 16, 'crop_size': 64})
    return str(path)


def test_click_tool_refines_with_the_box_model(window, tiny_box_model, monkeypatch):
    """One click -> the model with the object's box, all clicks so far and the last mask."""
    from vos_ros.core import interactive

    calls = []
    original = interactive.BoxModel.predict

    def predict(self, image, box=None, positive=(), negative=(), previous=None, *args,
                **kwargs):
        calls.append((box, list(positive), list(negative), previous is not None))
        return original(self, image, box, positive, negative, previous, *args, **kwargs)

    monkeypatch.setattr(interactive.BoxModel, 'predict', predict)
    window.segmenter = interactive.PromptSegmenter('model', tiny_box_model)
    window.apply_box((93, 43), (137, 87))
    window.tool = 'click'
    window.apply_click((115, 65), positive=True)
    window.apply_click((30, 30), positive=False)
    assert [c[1:] for c in calls] == [([], [], False), ([(115, 65)], [], True),
                                      ([(115, 65)], [(30, 30)], True)]
    assert all(c[0] == (93, 43, 137, 87) for c in calls)
    assert 'click 2' in window.message and 'model' in window.message
    # after undo the clicks start again from the mask shown
    window.undo()
    window.apply_click((116, 66), positive=True)
    assert calls[-1][1:3] == ([(116, 66)], [])
