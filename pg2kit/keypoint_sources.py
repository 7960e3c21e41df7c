"""Where a sample's keypoints come from: an estimator run in the workers, a file made elsewhere
(Def-GAN CSV, OpenPose JSON folder) looked up while planning, or the truth of synthetic figures.

Every source has `kind` and `version` (they go into the shard attributes `estimator` and
`estimator_version`). Worker-side sources are called as `source(image, record) -> (kp, scores)`;
imported keypoints are looked up in the parent (`lookup`) and travel with their record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pg2kit import __version__
from pg2kit.keypoints import MAX_COORD as ABSURD_COORDINATE  # noqa: E402
from pg2kit.keypoints import present

# Imported coordinates beyond ABSURD_COORDINATE pixels (1e6) are taken as garbage (a 400-digit
# number, 1e30 ...) and made missing, like non-finite ones; pg2kit.formats' readers do the same.


class KeypointSourceError(ValueError):
    """The keypoint file or folder itself is unusable (the whole run stops with this message)."""


def _match_key(name: str) -> str:
    """Names match on their stem (annotations say .jpg where files may be .png), with the
    'fashion' spelling of DeepFashion's 'fasion' files."""
    from pg2kit.datasets.deepfashion import canonical_key

    return canonical_key(Path(name).name)


def sanitize(kp: np.ndarray, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-finite or absurd coordinates made missing (-1, -1, score 0); returns how many."""
    kp = np.array(kp, np.float32, copy=True).reshape(-1, 2)
    sc = np.array(sc, np.float32, copy=True).reshape(-1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(kp).all(axis=1) | (np.abs(kp) > ABSURD_COORDINATE).any(axis=1)
        bad |= ~np.isfinite(sc)
    n = int(bad.sum())
    if n:
        kp[bad] = -1.0
        sc[bad] = 0.0
    return kp, sc, n


# ---------------------------------------------------------------- worker-side sources

_WORKER_ESTIMATOR: tuple[str, Any] | None = None


def worker_estimator(options: dict[str, Any]) -> Any:
    """One estimator per worker process, built on first use and kept for later tasks."""
    global _WORKER_ESTIMATOR
    key = json.dumps(options, sort_keys=True)
    if _WORKER_ESTIMATOR is None or _WORKER_ESTIMATOR[0] != key:
        from pg2kit.estimators import make_estimator

        _WORKER_ESTIMATOR = (key, make_estimator("mediapipe", **options))
    return _WORKER_ESTIMATOR[1]


_WORKER_FINDERS: dict[str, Any] = {}  # options -> PersonFinder, the few most recent


def worker_person_finder(options: dict[str, Any]) -> Any:
    """One pg2kit.persons.PersonFinder per worker process and settings (its models load once,
    on first use; runs with different settings in one pool keep theirs)."""
    key = json.dumps(options, sort_keys=True, default=str)
    if key not in _WORKER_FINDERS:
        from pg2kit.persons import PersonFinder

        while len(_WORKER_FINDERS) >= 4:
            _WORKER_FINDERS.pop(next(iter(_WORKER_FINDERS))).close()
        _WORKER_FINDERS[key] = PersonFinder(**options)
    return _WORKER_FINDERS[key]


def persons_version(options: dict[str, Any]) -> str:
    """`estimator_version` of keypoints found by pg2kit.persons with these options: the person
    finder's settings (defaults included) and the estimator's behind them, so that a prepared
    folder made before a default changed is not taken for one made now. Reads settings only:
    no model is loaded."""
    from pg2kit.estimators import make_estimator
    from pg2kit.persons import FinderConfig

    cfg = FinderConfig(**options)
    return f"persons-{cfg.tag()}+{make_estimator('mediapipe', **cfg.estimator_options).version}"


class EstimatorKeypoints:
    """MediaPipe keypoints of the whole image, estimated in the worker (picklable, light)."""

    kind = "mediapipe"
    in_parent = False

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})

    @property
    def version(self) -> str:
        # building the estimator only reads its settings: MediaPipe is not loaded here
        from pg2kit.estimators import make_estimator

        return make_estimator("mediapipe", **self.options).version

    def __call__(self, image: np.ndarray, record: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return worker_estimator(self.options)(image)


class TrueKeypoints:
    """The exact keypoints of the synthetic figures, from the adapter that drew them."""

    kind = "synthetic"
    in_parent = False
    version = __version__

    def __init__(self, adapter: Any):
        self.adapter = adapter

    def __call__(self, image: np.ndarray, record: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.adapter.truth(record)


# ---------------------------------------------------------------- imported keypoints


class ImportedKeypoints:
    """Keypoints made elsewhere: a Def-GAN annotation CSV or a folder of OpenPose JSON files.

    Looked up in the parent while planning (`lookup`); a malformed per-image JSON file is that
    image's failure (`LookupFailed`), not the run's. Non-finite and absurd coordinates become
    missing; `bad_coordinates` counts them.
    """

    in_parent = True

    def __init__(self, spec: str):
        self.path = Path(spec)
        if not self.path.exists():
            raise KeypointSourceError(f"--keypoints {spec}: no such file or folder")
        self.order: list[str] = []
        self.bad_coordinates = 0
        self._csv: dict[str, np.ndarray] = {}
        self._json: dict[str, Path] = {}
        if self.path.is_dir():
            self.kind = "openpose-json"
            for p in sorted(self.path.rglob("*.json")):
                self._json.setdefault(_match_key(p.stem.removesuffix("_keypoints")), p)
            if not self._json:
                raise KeypointSourceError(
                    f"--keypoints {spec}: folder holds no OpenPose .json files"
                )
        else:
            from pg2kit.formats import FormatError, read_defgan_annotations

            self.kind = "defgan-csv"
            try:
                table = read_defgan_annotations(self.path)
            except FormatError as e:
                raise KeypointSourceError(str(e)) from None
            self.bad_coordinates += int(getattr(table, "dropped", 0))
            for name, kp in zip(table.names, table.keypoints, strict=True):
                self._csv.setdefault(_match_key(name), kp)
                self.order.append(_match_key(name))

    @property
    def version(self) -> str:
        return str(self.path.name)

    def lookup(self, name: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Keypoints for an image, matched on its name's stem (or its raw file's stem).

        None when the source has none for it; LookupFailed when its JSON file is malformed.
        """
        keys = [_match_key(name)] + ([_match_key(path.name)] if path is not None else [])
        if self.kind == "defgan-csv":
            kp = next((self._csv[k] for k in keys if k in self._csv), None)
            if kp is None:
                return None
            kp = kp.astype(np.float32)
            sc = present(kp).astype(np.float32)
        else:
            p = next((self._json[k] for k in keys if k in self._json), None)
            if p is None:
                return None
            from pg2kit.formats import FormatError, read_openpose_json

            try:
                kp, sc = read_openpose_json(p)
            except (FormatError, OSError, ValueError, TypeError, AttributeError) as e:
                # a per-image file that does not parse: this image's problem, not the run's
                raise LookupFailed(f"keypoint file {p.name}: {' '.join(str(e).split())}") from None
        kp, sc, bad = sanitize(kp, sc)
        self.bad_coordinates += bad
        return kp, sc

    def rank(self, name: str) -> int:
        """Position of `name` in the annotation file (to keep its row order); large if absent."""
        if not hasattr(self, "_rank"):
            self._rank = {n: i for i, n in enumerate(self.order)}
        return self._rank.get(_match_key(name), len(self._rank))


class LookupFailed(ValueError):
    """An imported keypoint file for one image is malformed (message names the file)."""


def make_source(spec: str, adapter: Any, estimator_options: dict[str, Any] | None = None) -> Any:
    """The keypoint source for `--keypoints SPEC` ('mediapipe', a CSV file, a JSON folder)."""
    if getattr(adapter, "name", None) == "synthetic":
        return TrueKeypoints(adapter)
    if spec == "mediapipe":
        return EstimatorKeypoints(estimator_options)
    return ImportedKeypoints(spec)
