"""Confidence of the cheap path: how good a flow-propagated mask still is (0-100).

Seed system 003 (keyframe scheduling with a decision network) ran its segmentation network
only when a small network, looking at the optical-flow path's own features, predicted that the
warped result had fallen below a confidence target. This module is that decision network,
kept tiny: a logistic regression on a handful of features of the cheap path, fitted against
the IoU the cheap path actually achieved against ground truth (``bench/fit_confidence.py``),
so that its output reads as a predicted IoU in percent.

Features (per object, computed at the cheap path's working size; ``FEATURES`` lists them):

- ``inconsistent``: share of the object's neighbourhood (this frame's and the previous frame's
  mask, dilated) where forward and backward flow disagree (Sundaram et al. 2010);
- ``uncertain``: 1 - mean max-probability over that neighbourhood (soft, undecided masks);
- ``area_change``, ``step_change``: |log| of the area ratio to the last full result and to
  the previous frame;
- ``frames``: frames since the full model last ran;
- ``cum_inconsistent``, ``cum_uncertain``: sums of the two above since the last full run
  (errors of propagation accumulate);
- ``log_area``: log of the object's share of the frame (small objects are harder);
- ``motion``: mean flow magnitude over the neighbourhood, in units of the object's size
  (sqrt of its area at the last full run);
- ``full_uncertain``: ``uncertain`` of the full model's own result at its last run (a poor
  start stays poor);
- ``change``: mean absolute grey-level change (0-1) over the neighbourhood between this frame
  and the frame of the last full run (the scene moved on from what the memory last saw; the one
  motion cue of a cheap path without optical flow).

A cheap path without flow (the memory model's light and ROI passes) has no ``inconsistent``
or ``motion``; its model lists only the features it uses. Each cheap path has its own fitted
model file, a small JSON (``vos_ros/data/confidence_roi.json`` for the ROI pass,
``confidence_light.json`` for the light pass, ``confidence.json`` for flow): feature names,
standardising means and scales, weights, bias, and a record of what it was fitted on.
"""

import json
import os

import cv2
import numpy as np

#: Feature names, in the order of the model's weights.
FEATURES = ('inconsistent', 'uncertain', 'area_change', 'step_change', 'frames',
            'cum_inconsistent', 'cum_uncertain', 'log_area', 'motion', 'full_uncertain',
            'change')
#: The features a cheap path without optical flow has (the light and ROI passes).
FLOWLESS_FEATURES = ('uncertain', 'area_change', 'step_change', 'frames', 'cum_uncertain',
                     'log_area', 'full_uncertain', 'change')

_DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data')
#: Where the shipped models live, by cheap path.
DEFAULT_MODEL_PATHS = {'flow': os.path.join(_DATA, 'confidence.json'),
                       'light': os.path.join(_DATA, 'confidence_light.json'),
                       'roi': os.path.join(_DATA, 'confidence_roi.json')}
#: The flow cheap path's model (kept for callers of the first version).
DEFAULT_MODEL_PATH = DEFAULT_MODEL_PATHS['flow']

_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))


def _sigmoid(value):
    return 1.0 / (1.0 + np.exp(-np.clip(value, -60.0, 60.0)))


class ConfidenceModel:
    """Logistic regression from cheap-path features to a predicted IoU in percent."""

    def __init__(self, weights, bias, mean=None, scale=None, features=FEATURES, info=None):
        """Hold the coefficients; ValueError when their lengths do not match ``features``."""
        self.features = tuple(features)
        count = len(self.features)
        self.weights = np.asarray(weights, np.float64).reshape(-1)
        self.mean = np.zeros(count) if mean is None else np.asarray(mean, np.float64)
        self.scale = np.ones(count) if scale is None else np.asarray(scale, np.float64)
        self.bias = float(bias)
        self.info = dict(info or {})
        for name, array in (('weights', self.weights), ('mean', self.mean),
                            ('scale', self.scale)):
            if array.shape != (count,):
                raise ValueError(f'confidence model: {name} has {array.size} values for '
                                 f'{count} features')
        if not np.all(np.isfinite(self.weights)) or not np.all(self.scale > 0):
            raise ValueError('confidence model: weights must be finite and scales > 0')

    @classmethod
    def load(cls, path=None, cheap='flow'):
        """Read a model JSON (default: the one shipped for the ``cheap`` path, ``flow``,
        ``light`` or ``roi``); ValueError naming a bad file."""
        if path in (None, ''):
            if cheap not in DEFAULT_MODEL_PATHS:
                raise ValueError(f'no shipped confidence model for cheap path {cheap!r}; '
                                 f'choose one of {", ".join(DEFAULT_MODEL_PATHS)}')
            path = DEFAULT_MODEL_PATHS[cheap]
        path = os.fspath(path)
        try:
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
            features = tuple(data['features'])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f'cannot read confidence model {path}: {error}') from None
        unknown = [name for name in features if name not in FEATURES]
        if unknown:
            raise ValueError(f'confidence model {path}: unknown feature(s) {unknown}')
        return cls(data['weights'], data['bias'], data.get('mean'), data.get('scale'),
                   features, data.get('info'))

    def to_dict(self):
        """Return the JSON-ready description (what ``load`` reads)."""
        return {'features': list(self.features), 'mean': self.mean.tolist(),
                'scale': self.scale.tolist(), 'weights': self.weights.tolist(),
                'bias': self.bias, 'info': self.info}

    def save(self, path):
        """Write the model as JSON."""
        with open(path, 'w', encoding='utf-8') as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.write('\n')

    def matrix(self, rows):
        """Return an N×F array of the model's features from dicts (``FEATURES`` keys)."""
        return np.array([[float(row[name]) for name in self.features] for row in rows],
                        np.float64).reshape(-1, len(self.features))

    def predict(self, features):
        """Predicted IoU in percent (0-100) for an N×F feature array (or one dict)."""
        if isinstance(features, dict):
            return float(self.predict(self.matrix([features]))[0])
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        return 100.0 * _sigmoid(z @ self.weights + self.bias)


def fit_logistic(features, targets, l2=1e-2, iterations=50, names=FEATURES):
    """Fit weights and bias of ``sigmoid(z w + b)`` to targets in [0, 1] (soft labels).

    Newton's method (IRLS) on the cross-entropy with an L2 penalty ``l2`` on the weights (not
    the bias); ``features`` N×F (columns named by ``names``) are standardised here. Returns a
    ConfidenceModel.
    """
    x = np.asarray(features, np.float64)
    y = np.clip(np.asarray(targets, np.float64).reshape(-1), 0.0, 1.0)
    if x.ndim != 2 or x.shape[0] != y.size or y.size < 2:
        raise ValueError(f'need N×F features and N targets, got {x.shape} and {y.shape}')
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])
    theta = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], float(l2) * x.shape[0])
    penalty[-1] = 0.0
    for _ in range(int(iterations)):
        p = _sigmoid(z @ theta)
        gradient = z.T @ (p - y) + penalty * theta
        hessian = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return ConfidenceModel(theta[:-1], theta[-1], mean, scale, names)


def _region(masks):
    region = np.zeros(masks[0].shape, np.uint8)
    for mask in masks:
        region |= mask.view(np.uint8) if mask.dtype == bool else (mask > 0).astype(np.uint8)
    return cv2.dilate(region, _KERNEL) > 0


def _uncertainty(prob, region):
    if not region.any():
        return 0.0
    values = prob[region]
    return float(1.0 - np.mean(np.maximum(values, 1.0 - values)))


class CheapPathFeatures:
    """Follow the cheap path from one full result and compute its features per frame.

    ``start(probs, image)`` after every full result (or given mask); ``update(probs, flow,
    untrusted, image)`` after every cheap step returns one feature dict per object channel
    (1..K). All arrays at the cheap path's working size: probs (K + 1)×h×w, flow h×w×2
    (pixels), untrusted h×w bool (None = unknown, counted as consistent), image h×w×3 uint8 RGB
    (None in either call: ``change`` is 0).
    """

    def __init__(self):
        self._reference = None

    def start(self, probs, image=None):
        """Take ``probs`` (a full result on ``image``) as the new reference."""
        probs = np.asarray(probs, np.float32)
        self._gray = None if image is None else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        masks = [probs[k] > 0.5 for k in range(1, probs.shape[0])]
        self._reference = {
            'areas': [float(m.sum()) for m in masks],
            'uncertain': [_uncertainty(probs[k], _region([m]))
                          for k, m in zip(range(1, probs.shape[0]), masks)],
        }
        self._previous = masks
        self._frames = 0
        self._cum_inconsistent = [0.0] * len(masks)
        self._cum_uncertain = [0.0] * len(masks)

    @property
    def started(self):
        """True once a reference result was given."""
        return self._reference is not None

    def update(self, probs, flow=None, untrusted=None, image=None):
        """Return the feature dicts of this cheap step, one per object channel."""
        if self._reference is None:
            raise RuntimeError('CheapPathFeatures.update before start')
        probs = np.asarray(probs, np.float32)
        if probs.shape[0] - 1 != len(self._previous):
            raise ValueError(f'{probs.shape[0] - 1} objects but the reference had '
                             f'{len(self._previous)}')
        self._frames += 1
        height, width = probs.shape[1:]
        magnitude = None if flow is None else cv2.magnitude(flow[:, :, 0], flow[:, :, 1])
        difference = None
        if image is not None and self._gray is not None:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if gray.shape == self._gray.shape:
                difference = cv2.absdiff(gray, self._gray)
        rows = []
        masks = []
        for index in range(len(self._previous)):
            prob = probs[index + 1]
            mask = prob > 0.5
            masks.append(mask)
            region = _region([mask, self._previous[index]])
            inconsistent = (float(untrusted[region].mean())
                            if untrusted is not None and region.any() else 0.0)
            uncertain = _uncertainty(prob, region)
            area = float(mask.sum())
            reference = self._reference['areas'][index]
            previous = float(self._previous[index].sum())
            self._cum_inconsistent[index] += inconsistent
            self._cum_uncertain[index] += uncertain
            motion = 0.0
            if magnitude is not None and region.any():
                motion = float(magnitude[region].mean()) / np.sqrt(reference + 1.0)
            rows.append({
                'inconsistent': inconsistent,
                'uncertain': uncertain,
                'area_change': abs(np.log((area + 1.0) / (reference + 1.0))),
                'step_change': abs(np.log((area + 1.0) / (previous + 1.0))),
                'frames': float(self._frames),
                'cum_inconsistent': self._cum_inconsistent[index],
                'cum_uncertain': self._cum_uncertain[index],
                'log_area': float(np.log(area / (height * width) + 1e-4)),
                'motion': motion,
                'full_uncertain': self._reference['uncertain'][index],
                'change': (float(difference[region].mean()) / 255.0
                           if difference is not None and region.any() else 0.0),
            })
        self._previous = masks
        return rows
