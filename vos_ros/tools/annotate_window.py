"""The annotation window of ``annotate`` (Tkinter: Python's standard library, runs under Xvfb).

Draw objects with a polygon, a brush, an eraser or a box (GrabCut, or the learned box model
with ``--method model``/``auto``), refine with clicks or scribbles (each one updates the mask
from the last result), pick the object id 1-9, undo/redo, zoom and pan, change the
overlay opacity, step through the frames of a video, sequence or bag, then save the palette PNG
(and optionally publish it to the running node). Press ``h`` for the list of keys.
"""

import os
import sys

import cv2
import numpy as np

from vos_ros.core.annotation import check_box
from vos_ros.core.errors import VosError
from vos_ros.core.labels import DAVIS_PALETTE
from vos_ros.core.labels import object_ids
from vos_ros.core.labels import overlay
from vos_ros.core.labels import write_labels

TITLE = 'vos_ros annotate'
HEADLESS_HINT = ('use the headless flags instead: --box x0,y0,x1,y1, --points x,y,label … or '
                 '--from-mask PNG (see annotate --help)')
UNDO_LIMIT = 50
OPACITIES = (0.5, 0.75, 1.0, 0.0, 0.25)
MIN_VIEW = (720, 440)

KEYS = (
    ('p', 'polygon tool: click vertices, Enter or right-click closes'),
    ('b', 'brush tool: drag paints the current object'),
    ('e', 'eraser tool: drag erases (any object)'),
    ('r', 'box tool: drag a box, the object is segmented inside it'),
    ('k', 'click refine: left-click object, right-click background'),
    ('s', 'scribble refine: left-drag object, right-drag background'),
    ('1-9', 'current object id (its palette colour)'),
    ('[ ]', 'brush / eraser / scribble size smaller, larger'),
    ('u, Ctrl+Z', 'undo'),
    ('y, Ctrl+Y', 'redo'),
    ('c', 'clear the current object'),
    ('+ - / wheel', 'zoom in, out (0 resets zoom and pan)'),
    ('arrows / middle-drag', 'pan'),
    ('o', 'overlay opacity (cycles 50, 75, 100, 0, 25 %)'),
    ('n, PageDown', 'next frame'),
    ('N, PageUp', 'previous frame'),
    ('Ctrl+S, w', 'save the palette PNG'),
    ('P', 'save and publish to the node'),
    ('Escape', 'cancel the current stroke / polygon'),
    ('h, F1', 'this help'),
    ('q', 'quit'),
)


def display_problem():
    """Return why no window can open here, or None when a display seems available."""
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY')
                                                 or os.environ.get('WAYLAND_DISPLAY')):
        return 'no display (DISPLAY is not set)'
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return 'Tkinter is not installed (apt-get install python3-tk)'
    return None


class AnnotationWindow:
    """The Tk window and its editing state (labels of the shown frame, tools, history)."""

    def __init__(self, root, source, args, publish=None, segmenter=None):
        import tkinter

        from vos_ros.core.interactive import PromptSegmenter

        self.tk = tkinter
        self.root = root
        self.source = source
        self.args = args
        self.publish = publish
        if segmenter is None:
            segmenter = PromptSegmenter(
                getattr(args, 'method', None), getattr(args, 'model', None),
                log=lambda line: print(f'annotate: note: {line}', file=sys.stderr))
        self.segmenter = segmenter
        # per object id: the box drawn and the clicks since (what the next click refines)
        self.prompts = {}
        self.frame_index = max(0, int(getattr(args, 'frame', 0) or 0))
        self.image = source.read(self.frame_index)
        self.labels = np.zeros(self.image.shape[:2], np.uint8)
        self.undo_stack = []
        self.redo_stack = []
        self.object_id = 1
        self.tool = 'polygon'
        self.opacity_index = 0
        self.radius = 6
        self.polygon = []
        self.stroke = []
        self.stroke_button = 1
        self.drag_start = None
        self.pan_start = None
        self.help_shown = False
        self.saved = False
        self.message = 'press h for help'
        screen_w = max(root.winfo_screenwidth() - 40, 200)
        screen_h = max(root.winfo_screenheight() - 120, 200)
        height, width = self.image.shape[:2]
        self.zoom = min(1.0, screen_w / width, screen_h / height)
        self.offset = [0.0, 0.0]
        # The view is at least MIN_VIEW so the help fits; the image sits at its top-left at
        # zoom 1 (image pixel = view pixel), which scripted tests rely on.
        view_w = max(int(round(width * self.zoom)), min(MIN_VIEW[0], screen_w))
        view_h = max(int(round(height * self.zoom)), min(MIN_VIEW[1], screen_h))
        root.title(f'{TITLE}: {source.name}')
        self.canvas = tkinter.Canvas(root, width=view_w, height=view_h, highlightthickness=0,
                                     borderwidth=0, background='black', cursor='crosshair')
        self.canvas.grid(row=0, column=0, sticky='nw')
        self.status = tkinter.Label(root, anchor='w', justify='left', font=('TkFixedFont', 9))
        self.status.grid(row=1, column=0, sticky='ew')
        self.photo = None
        self._bind()
        self.render()

    # -- geometry --------------------------------------------------------------------------

    def to_image(self, x, y):
        """Canvas pixel -> image pixel (float)."""
        return (x - self.offset[0]) / self.zoom, (y - self.offset[1]) / self.zoom

    def to_canvas(self, x, y):
        """Image pixel -> canvas pixel."""
        return x * self.zoom + self.offset[0], y * self.zoom + self.offset[1]

    def _clip_point(self, x, y):
        height, width = self.labels.shape
        return (int(min(max(round(x), 0), width - 1)), int(min(max(round(y), 0), height - 1)))

    # -- events ----------------------------------------------------------------------------

    def _bind(self):
        canvas, root = self.canvas, self.root
        canvas.bind('<ButtonPress-1>', lambda e: self.on_press(e, 1))
        canvas.bind('<B1-Motion>', lambda e: self.on_drag(e, 1))
        canvas.bind('<ButtonRelease-1>', lambda e: self.on_release(e, 1))
        canvas.bind('<ButtonPress-3>', lambda e: self.on_press(e, 3))
        canvas.bind('<B3-Motion>', lambda e: self.on_drag(e, 3))
        canvas.bind('<ButtonRelease-3>', lambda e: self.on_release(e, 3))
        canvas.bind('<ButtonPress-2>', self.on_pan_start)
        canvas.bind('<B2-Motion>', self.on_pan)
        canvas.bind('<Button-4>', lambda e: self.zoom_by(1.25, e.x, e.y))
        canvas.bind('<Button-5>', lambda e: self.zoom_by(0.8, e.x, e.y))
        canvas.bind('<MouseWheel>', lambda e: self.zoom_by(1.25 if e.delta > 0 else 0.8,
                                                           e.x, e.y))
        canvas.bind('<Motion>', self.on_motion)
        root.bind('<Key>', self.on_key)
        root.bind('<Control-z>', lambda e: self.undo())
        root.bind('<Control-y>', lambda e: self.redo())
        root.bind('<Control-s>', lambda e: self.save())
        root.protocol('WM_DELETE_WINDOW', self.quit)

    def on_key(self, event):
        """Dispatch a key press (see KEYS)."""
        if event.state & 0x4:  # Control: handled by the specific bindings
            return
        key, char = event.keysym, event.char
        tools = {'p': 'polygon', 'b': 'brush', 'e': 'eraser', 'r': 'box', 's': 'scribble',
                 'k': 'click'}
        if char in tools:
            self.tool = tools[char]
            self.polygon = []
            self.message = f'{self.tool} tool'
        elif char and char in '123456789':
            self.object_id = int(char)
            self.message = f'object {self.object_id}'
        elif char == '[':
            self.radius = max(1, self.radius - 1 if self.radius <= 4 else int(self.radius / 1.3))
        elif char == ']':
            self.radius = min(200, max(self.radius + 1, int(self.radius * 1.3)))
        elif char == 'u':
            self.undo()
        elif char == 'y':
            self.redo()
        elif char == 'c':
            self.push_undo()
            self.labels[self.labels == self.object_id] = 0
            self.prompts.pop(self.object_id, None)
        elif char in ('+', '='):
            self.zoom_by(1.25)
        elif char == '-':
            self.zoom_by(0.8)
        elif char == '0':
            self.reset_view()
        elif key in ('Left', 'Right', 'Up', 'Down'):
            step = 40
            dx = {'Left': step, 'Right': -step}.get(key, 0)
            dy = {'Up': step, 'Down': -step}.get(key, 0)
            self.offset[0] += dx
            self.offset[1] += dy
        elif char == 'o':
            self.opacity_index = (self.opacity_index + 1) % len(OPACITIES)
            self.message = f'opacity {int(OPACITIES[self.opacity_index] * 100)} %'
        elif char == 'n' or key == 'Next':
            self.step_frame(1)
        elif char == 'N' or key == 'Prior':
            self.step_frame(-1)
        elif char == 'w':
            self.save()
        elif char == 'P':
            self.save(publish=True)
        elif key in ('Return', 'KP_Enter'):
            self.close_polygon()
        elif key == 'Escape':
            self.polygon = []
            self.stroke = []
            self.drag_start = None
            self.help_shown = False
        elif char == 'h' or key == 'F1':
            self.help_shown = not self.help_shown
        elif char == 'q':
            self.quit()
            return
        else:
            return
        self.render()

    def on_press(self, event, button):
        """Start a polygon vertex, stroke or box."""
        point = self.to_image(event.x, event.y)
        if self.tool == 'polygon':
            if button == 3:
                self.close_polygon()
            else:
                self.polygon.append(self._clip_point(*point))
        elif self.tool in ('brush', 'eraser', 'scribble'):
            if self.tool != 'scribble':
                self.push_undo()
            self.stroke = [self._clip_point(*point)]
            self.stroke_button = button
            if self.tool != 'scribble':
                self.paint_stroke(self.stroke)
        elif self.tool == 'box':
            self.drag_start = self._clip_point(*point)
            self.drag_end = self.drag_start
        elif self.tool == 'click':
            self.apply_click(self._clip_point(*point), positive=(button == 1))
        self.render()

    def on_drag(self, event, button):
        """Extend a stroke or box."""
        point = self._clip_point(*self.to_image(event.x, event.y))
        if self.tool in ('brush', 'eraser', 'scribble') and self.stroke:
            self.stroke.append(point)
            if self.tool != 'scribble':
                self.paint_stroke(self.stroke[-2:])
            self.render()
        elif self.tool == 'box' and self.drag_start is not None:
            self.drag_end = point
            self.render()

    def on_release(self, event, button):
        """Finish a stroke (scribbles refine now) or a box (segment now)."""
        if self.tool == 'scribble' and self.stroke:
            self.apply_scribble(self.stroke, positive=(self.stroke_button == 1))
            self.stroke = []
        elif self.tool in ('brush', 'eraser'):
            self.stroke = []
        elif self.tool == 'box' and self.drag_start is not None:
            self.drag_end = self._clip_point(*self.to_image(event.x, event.y))
            self.apply_box(self.drag_start, self.drag_end)
            self.drag_start = None
        self.render()

    def on_motion(self, event):
        """Show the cursor position in the status line."""
        x, y = self.to_image(event.x, event.y)
        self.cursor = (int(x), int(y))
        self.update_status()

    def on_pan_start(self, event):
        self.pan_start = (event.x, event.y, self.offset[0], self.offset[1])

    def on_pan(self, event):
        if self.pan_start is None:
            return
        x, y, ox, oy = self.pan_start
        self.offset = [ox + event.x - x, oy + event.y - y]
        self.render()

    # -- editing ---------------------------------------------------------------------------

    def push_undo(self):
        """Remember the labels before an edit (and forget the redo history)."""
        self.undo_stack.append(self.labels.copy())
        del self.undo_stack[:-UNDO_LIMIT]
        self.redo_stack.clear()

    def undo(self):
        # clicks refine the mask shown: after undo or redo they start again from it
        for prompt in self.prompts.values():
            prompt['clicks'] = []
        if self.undo_stack:
            self.redo_stack.append(self.labels)
            self.labels = self.undo_stack.pop()
            self.message = 'undone'
        else:
            self.message = 'nothing to undo'
        self.render()

    def redo(self):
        for prompt in self.prompts.values():
            prompt['clicks'] = []
        if self.redo_stack:
            self.undo_stack.append(self.labels)
            self.labels = self.redo_stack.pop()
            self.message = 'redone'
        else:
            self.message = 'nothing to redo'
        self.render()

    def paint_stroke(self, points):
        """Paint (brush) or erase along image points with the current radius."""
        value = 0 if self.tool == 'eraser' else self.object_id
        layer = np.zeros(self.labels.shape, np.uint8)
        if len(points) == 1:
            cv2.circle(layer, points[0], self.radius, 1, -1)
        else:
            cv2.polylines(layer, [np.array(points, np.int32)], False, 1, self.radius * 2 + 1)
        self.labels[layer > 0] = value

    def close_polygon(self):
        """Fill the polygon drawn so far with the current object."""
        if len(self.polygon) < 3:
            self.message = 'a polygon needs at least 3 vertices'
            self.polygon = []
            return
        self.push_undo()
        layer = np.zeros(self.labels.shape, np.uint8)
        cv2.fillPoly(layer, [np.array(self.polygon, np.int32)], 1)
        self.labels[layer > 0] = self.object_id
        self.message = f'polygon -> object {self.object_id}'
        self.polygon = []

    def apply_box(self, start, end):
        """Segment the object inside a dragged box (the headless box algorithm)."""
        height, width = self.labels.shape
        try:
            box = check_box((start[0], start[1], end[0], end[1]), width, height)
        except ValueError as error:
            self.message = str(error)
            return
        self.set_busy(True)
        try:
            mask = self.segmenter.box(self.image, box)
        finally:
            self.set_busy(False)
        self.push_undo()
        self.labels[mask] = self.object_id
        self.prompts[self.object_id] = {'box': box, 'clicks': [], 'frame': self.frame_index}
        self.message = (f'box -> object {self.object_id} ({int(mask.sum())} px, '
                        f'{self.segmenter.method})')

    def _prompt(self):
        """The current object's box and clicks on this frame (a fresh record otherwise)."""
        prompt = self.prompts.get(self.object_id)
        if prompt is None or prompt['frame'] != self.frame_index:
            prompt = {'box': None, 'clicks': [], 'frame': self.frame_index}
            self.prompts[self.object_id] = prompt
        return prompt

    def _replace_object(self, current, refined):
        """Put a refined mask of the current object in place (never taking other objects)."""
        self.push_undo()
        self.labels[current & ~refined] = 0
        self.labels[refined & ((self.labels == 0) | current)] = self.object_id

    def apply_click(self, point, positive):
        """Refine the current object with one click: the last mask plus all clicks so far."""
        prompt = self._prompt()
        current = self.labels == self.object_id
        if not positive and not current.any() and prompt['box'] is None:
            self.message = 'start an object with a box or a left (object) click'
            return
        clicks = prompt['clicks'] + [(point[0], point[1], 1 if positive else 0)]
        self.set_busy(True)
        try:
            refined = self.segmenter.refine(self.image, clicks, box=prompt['box'],
                                            previous=current)
        except ValueError as error:
            self.message = str(error)
            return
        finally:
            self.set_busy(False)
        prompt['clicks'] = clicks
        self._replace_object(current, refined)
        self.message = (f'{"object" if positive else "background"} click {len(clicks)} -> '
                        f'object {self.object_id} ({int(refined.sum())} px, '
                        f'{self.segmenter.method})')

    def apply_scribble(self, points, positive):
        """Refine the current object from one object (left) or background (right) stroke."""
        stroke = np.zeros(self.labels.shape, np.uint8)
        if len(points) == 1:
            cv2.circle(stroke, points[0], self.radius, 1, -1)
        else:
            cv2.polylines(stroke, [np.array(points, np.int32)], False, 1, self.radius * 2 + 1)
        stroke = stroke > 0
        current = self.labels == self.object_id
        if not positive and not current.any():
            self.message = 'a background scribble needs an object to refine'
            return
        prompt = self._prompt()
        self.set_busy(True)
        try:
            refined = self.segmenter.scribble(self.image, current,
                                              stroke if positive else None,
                                              None if positive else stroke, box=prompt['box'])
        finally:
            self.set_busy(False)
        # Refinement never takes pixels from other objects.
        self._replace_object(current, refined)
        self.message = (f'refined object {self.object_id} with a '
                        f'{"object" if positive else "background"} scribble')

    def set_busy(self, busy):
        self.canvas.configure(cursor='watch' if busy else 'crosshair')
        if busy:
            self.message = 'segmenting…'
            self.update_status()
        self.root.update_idletasks()

    def step_frame(self, delta):
        """Show another frame of the source (the mask is kept for the new frame)."""
        count = len(self.source)
        index = self.frame_index + delta
        if not 0 <= index < count:
            self.message = f'no frame {index} (frames 0..{count - 1})'
            return
        try:
            image = self.source.read(index)
        except VosError as error:
            self.message = str(error)
            return
        if image.shape[:2] != self.image.shape[:2]:
            self.labels = np.zeros(image.shape[:2], np.uint8)
        self.image = image
        self.frame_index = index
        self.message = f'frame {index}'

    def reset_view(self):
        height, width = self.labels.shape
        self.zoom = min(1.0, int(self.canvas['width']) / width,
                        int(self.canvas['height']) / height)
        self.message = 'zoom and pan reset'
        self.offset = [0.0, 0.0]

    def zoom_by(self, factor, x=None, y=None):
        """Zoom about canvas point (x, y) (the canvas centre by default)."""
        if x is None:
            x, y = int(self.canvas['width']) / 2, int(self.canvas['height']) / 2
        image_x, image_y = self.to_image(x, y)
        self.zoom = min(max(self.zoom * factor, 0.05), 32.0)
        self.offset = [x - image_x * self.zoom, y - image_y * self.zoom]
        self.message = f'zoom {self.zoom * 100:.0f} %'
        self.render()

    # -- output ----------------------------------------------------------------------------

    def save(self, publish=False):
        """Write the palette PNG (and the frame, when asked); publish when asked."""
        if not self.labels.any():
            self.message = 'nothing to save: the mask is empty'
            self.render()
            return False
        out = self.args.out
        if os.path.exists(out) and not (self.args.force or self.saved):
            self.message = f'{out} exists; start with --force to overwrite it'
            self.render()
            return False
        try:
            write_labels(out, self.labels)
            if getattr(self.args, 'save_frame', None):
                cv2.imwrite(self.args.save_frame, cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR))
        except (OSError, ValueError) as error:
            self.message = f'cannot save: {error}'
            self.render()
            return False
        self.saved = True
        self.message = f'saved {out} (frame {self.frame_index}, objects ' \
                       f'{object_ids(self.labels)})'
        if publish:
            self.update_status()
            self.root.update_idletasks()
            try:
                self.publish(self.labels, self.source.frame_id)
                self.message += f'; published to {self.args.annotation_topic}'
            except VosError as error:
                self.message += f'; NOT published: {error}'
        print(self.message)
        self.render()
        return True

    def quit(self):
        self.root.destroy()

    # -- drawing ---------------------------------------------------------------------------

    def composite(self):
        """Return the RGB view of the frame with the labels blended in (outlined in white)."""
        alpha = OPACITIES[self.opacity_index]
        if alpha <= 0 or not self.labels.any():
            return self.image
        return overlay(self.image, self.labels, alpha=alpha, contour=True)

    def render(self):
        """Redraw the visible part of the composite at the current zoom and pan."""
        view_w, view_h = int(self.canvas['width']), int(self.canvas['height'])
        composite = self.composite()
        # Affine map image -> canvas; warpAffine crops and scales in one pass.
        matrix = np.array([[self.zoom, 0, self.offset[0]], [0, self.zoom, self.offset[1]]],
                          np.float64)
        interpolation = cv2.INTER_NEAREST if self.zoom >= 1 else cv2.INTER_AREA
        shown = cv2.warpAffine(composite, matrix, (view_w, view_h), flags=interpolation,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))
        header = f'P6 {view_w} {view_h} 255 '.encode('ascii')
        self.photo = self.tk.PhotoImage(data=header + shown.tobytes(), format='PPM')
        canvas = self.canvas
        canvas.delete('all')
        canvas.create_image(0, 0, anchor='nw', image=self.photo)
        colour = '#%02x%02x%02x' % tuple(int(v) for v in DAVIS_PALETTE[self.object_id])
        if self.polygon:
            points = [c for p in self.polygon for c in self.to_canvas(*p)]
            if len(self.polygon) > 1:
                canvas.create_line(*points, fill=colour, width=2)
            for x, y in zip(points[0::2], points[1::2]):
                canvas.create_rectangle(x - 2, y - 2, x + 2, y + 2, outline='white')
        if self.tool == 'scribble' and len(self.stroke) > 1:
            points = [c for p in self.stroke for c in self.to_canvas(*p)]
            canvas.create_line(*points, fill='#00ff00' if self.stroke_button == 1 else '#ff0000',
                               width=max(1, int(self.radius * self.zoom)))
        if self.tool == 'box' and self.drag_start is not None:
            x0, y0 = self.to_canvas(*self.drag_start)
            x1, y1 = self.to_canvas(*self.drag_end)
            canvas.create_rectangle(x0, y0, x1, y1, outline=colour, width=2, dash=(4, 2))
        if self.help_shown:
            self.draw_help(view_w, view_h)
        self.update_status()

    def draw_help(self, view_w, view_h):
        """Draw the key list over the image (two columns: keys, what they do)."""
        canvas = self.canvas
        canvas.create_rectangle(4, 4, view_w - 4, view_h - 4, fill='#101010', outline='white')
        canvas.create_text(12, 10, anchor='nw', fill='white', font=('TkDefaultFont', 10, 'bold'),
                           text='Keys (h closes this help)')
        for row, (key, text) in enumerate(KEYS):
            y = 32 + row * 19
            canvas.create_text(12, y, anchor='nw', text=key, fill='#ffd75f',
                               font=('TkDefaultFont', 10))
            canvas.create_text(170, y, anchor='nw', text=text, fill='white',
                               font=('TkDefaultFont', 10))

    def update_status(self):
        count = len(self.source)
        cursor = getattr(self, 'cursor', None)
        where = f'  x,y {cursor[0]},{cursor[1]}' if cursor else ''
        self.status.configure(
            text=(f'tool {self.tool}  object {self.object_id}  size {self.radius}  '
                  f'opacity {int(OPACITIES[self.opacity_index] * 100)}%  '
                  f'zoom {self.zoom * 100:.0f}%  frame {self.frame_index + 1}/{count}{where}'
                  f'\n{self.message}'),
            foreground='#%02x%02x%02x' % tuple(int(v) for v in DAVIS_PALETTE[self.object_id]),
            background='#202020')


def run_window(source, args):
    """Open the window on ``source``; return the exit code (2 when no window can open)."""
    if source is None:
        raise ValueError('the window needs a source (--image, --video, --sequence, --bag)')
    problem = display_problem()
    if problem:
        print(f'annotate: error: cannot open the annotation window: {problem}; '
              f'{HEADLESS_HINT}', file=sys.stderr)
        return 2
    import tkinter

    try:
        root = tkinter.Tk(className='vos_annotate')
    except tkinter.TclError as error:
        print(f'annotate: error: cannot open the annotation window ({error}); {HEADLESS_HINT}',
              file=sys.stderr)
        return 2

    def publish(labels, frame_id):
        from vos_ros.tools.annotate import publish_labels

        publish_labels(labels, args.annotation_topic, args.timeout, frame_id)

    window = AnnotationWindow(root, source, args, publish)
    # load the box model while the user looks at the frame (the first box is then quick)
    root.after(300, lambda: window.segmenter.method)
    root.mainloop()
    if not window.saved:
        print('annotate: window closed without saving', file=sys.stderr)
        return 1
    return 0
