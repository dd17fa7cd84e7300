"""68-point facial landmarks behind one interface, with three backends.

`fan` (face-alignment, the paper's landmark network) is the better one but needs weights that are
downloaded once; `dlib` (HOG detector + shape predictor from face-recognition-models) works fully
offline; `mesh` (mediapipe's 478-point face mesh, optional) works offline too and also finds the irises.
Models load once per process (module-level cache) because loading costs far more than a frame.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import AnimateError
from ..video import stderr_silenced
from .iris import iris_centres

FAN_FILES = ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar")
_CACHE: dict = {}


def _checkpoint_dir() -> Path:
    """Where torch.hub (and so face-alignment) keeps downloaded weights; honours $TORCH_HOME."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def fan_weights_cached() -> bool:
    """True when both face-alignment files are present, so creating the backend will not download."""
    folder = _checkpoint_dir()
    return all((folder / name).is_file() for name in FAN_FILES)


def _online(host: str = "www.adrianbulat.com", timeout: float = 3.0) -> bool:
    """Can we reach face-alignment's download host? Checked before it tries, so we fail in one line."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _nms(boxes: list[np.ndarray], scores: list[float], iou: float = 0.3) -> list[int]:
    """Indices of boxes kept after greedy non-maximum suppression (highest score wins)."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) < iou for j in keep):
            keep.append(i)
    return keep


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _largest_first(boxes: list[np.ndarray]) -> list[np.ndarray]:
    return sorted(boxes, key=lambda b: -float((b[2] - b[0]) * (b[3] - b[1])))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise AnimateError(f"expected an RGB uint8 image (H,W,3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


@dataclass
class FaceFit:
    """One face in one image: 68 iBUG points (68,2) and iris centres (2,2) in the eye order of
    face.measures (eye of points 36-41 first). Points are NaN where the fit failed."""

    points: np.ndarray
    irises: np.ndarray | None = None  # None: the fit failed


class LandmarkDetector:
    """Finds faces (boxes, largest first) and fits 68 iBUG points inside a box."""

    name: str = ""

    def detect(self, image: np.ndarray, work_size: int | None = None) -> list[np.ndarray]:
        """Face boxes float32 [x0,y0,x1,y1] in `image` pixels, largest first.

        work_size: long side the image is resized to before detection (None: the backend's default);
        the tracker passes a small value for cheap re-detection in a region."""
        raise NotImplementedError

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:
        """(68,2) float32 for the face in `box`."""
        raise NotImplementedError

    def fit(self, image: np.ndarray, box) -> FaceFit:
        """Landmarks and irises of the face in `box`; backends without irises of their own get the dark
        blob in each eye (face.iris)."""
        pts = self.landmarks(image, box)
        return FaceFit(pts, iris_centres(image, pts) if np.isfinite(pts).all() else None)

    def box_from_landmarks(self, pts: np.ndarray) -> np.ndarray:
        """The box this backend's detector would give for a face with these landmarks (for tracking)."""
        lo, hi = pts.min(0), pts.max(0)
        return np.array([lo[0], lo[1], hi[0], hi[1]], np.float32)


class DlibDetector(LandmarkDetector):
    """HOG detector + 68-point shape predictor: offline, ~2.4 ms per landmark fit."""

    name = "dlib"
    WORK_SIZE = 960           # long side for detection: small faces get upsampled, big frames shrunk
    PHASES = (1.0, 0.9, 0.8)  # interleave dlib's 5/6 pyramid: borderline faces are found at some phase
    SCORE_SPAN = 1.0          # drop detections this much weaker than the best (HOG false positives)

    def __init__(self):
        import dlib

        if "dlib" not in _CACHE:
            spec = importlib.util.find_spec("face_recognition_models")
            if spec is None or not spec.submodule_search_locations:
                raise AnimateError("face-recognition-models is not installed (pip install face-recognition-models)")
            path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
            if not path.is_file():
                raise AnimateError(f"dlib landmark model missing: {path}")
            _CACHE["dlib"] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path)))
        self._dlib = dlib
        self._hog, self._predictor = _CACHE["dlib"]

    def detect(self, image, work_size=None):
        image = _as_rgb(image)
        base = (work_size or self.WORK_SIZE) / max(image.shape[:2])
        boxes, scores = [], []
        for phase in self.PHASES:
            s = base * phase
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            small = cv2.resize(image, None, fx=s, fy=s, interpolation=interp) if abs(s - 1) > 1e-3 else image
            rects, rect_scores, _ = self._hog.run(small, 0, 0.0)
            for r, sc in zip(rects, rect_scores):
                boxes.append(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32) / s)
                scores.append(float(sc))
        if not boxes:
            return []
        keep = [i for i in _nms(boxes, scores) if scores[i] >= max(scores) - self.SCORE_SPAN]
        return _largest_first([boxes[i] for i in keep])

    def landmarks(self, image, box):
        image = _as_rgb(image)
        x0, y0, x1, y1 = [int(round(float(v))) for v in box]
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def box_from_landmarks(self, pts):
        # Measured on HOG boxes vs their own landmark fits: dlib boxes are square, ~1.08x the
        # landmarks' width, centred ~0.06 side above the landmark bbox centre (the chin hangs below).
        lo, hi = pts.min(0), pts.max(0)
        side = 1.08 * (hi[0] - lo[0])
        cx = (lo[0] + hi[0]) / 2
        cy = (lo[1] + hi[1]) / 2 - 0.06 * side
        return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


class FanDetector(LandmarkDetector):
    """face-alignment's S3FD detector + 2D-FAN: the paper's landmarks; best on a GPU."""

    name = "fan"

    def __init__(self, device: str = "cpu"):
        if not fan_weights_cached() and not _online():
            raise AnimateError(
                f"face-alignment weights are not in {_checkpoint_dir()} and there is no internet to download "
                f"them; copy {' and '.join(FAN_FILES)} there or use --landmarks dlib")
        key = ("fan", device, str(_checkpoint_dir()))
        if key not in _CACHE:
            _CACHE[key] = _load_fan(device)
        self._fa = _CACHE[key]

    def detect(self, image, work_size=None):
        image = _as_rgb(image)
        s = min(1.0, (work_size or 640) / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else image
        found = self._fa.face_detector.detect_from_image(small.copy())
        boxes = [np.asarray(b[:4], np.float32) / s for b in found]
        return _largest_first(boxes)

    def landmarks(self, image, box):
        image = _as_rgb(image)
        # float64: face-alignment's crop code fails on float32 boxes
        out = self._fa.get_landmarks_from_image(image, detected_faces=[np.asarray(box, np.float64)])
        if not out:
            raise AnimateError("face-alignment returned no landmarks for the given face box")
        return np.asarray(out[0][:, :2], np.float32)


def _load_fan(device: str):
    """Build face_alignment.FaceAlignment; wraps download/load failures into one line."""
    import inspect

    import face_alignment

    kwargs = dict(device=device, face_detector="sfd", flip_input=False)
    if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
        kwargs["compile"] = False  # compiling costs minutes on CPU for a one-off speed-up
    lm_type = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
    try:
        return face_alignment.FaceAlignment(lm_type, **kwargs)
    except Exception as e:  # download errors, truncated/foreign weight files
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise AnimateError(f"could not load face-alignment weights from {_checkpoint_dir()}: {reason}") from e


# Mesh vertex nearest (median over 159 faces: val clips, fixtures, VoxCeleb frames; dlib fits on the same
# boxes) to each iBUG point. Eyelids and inner lips land within 0.02-0.04 inter-ocular distances of dlib's;
# the jaw within 0.06-0.15 (the mesh's oval is drawn on the skull, dlib's on the silhouette).
MESH_TO_IBUG: tuple[int, ...] = (
    127, 234, 177, 215, 138, 136, 149, 176, 152, 377, 378, 365, 367, 435, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                       # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 460,                                                 # nose 27-35
    33, 160, 158, 155, 153, 144, 382, 385, 387, 263, 373, 380,                           # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 91,                                  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87)                                                   # inner lips 60-67
MESH_IRISES = (468, 473)  # iris centres: the eye of iBUG 36-41 (image left when frontal), then 42-47
MESH_CROP = 256           # side of the square crop the mesh sees, around the face box
MESH_MARGIN = 2.2         # crop side / face box side: the mesh's own detector wants forehead and chin


def _import_face_mesh():
    """mediapipe's legacy face-mesh solution, or a one-line error saying how to install it.

    Its `solutions` package imports matplotlib for drawing helpers we never call; where matplotlib is
    absent a stand-in module is put in its place for the import only (so neither matplotlib nor
    mediapipe's other heavy dependencies - jax, numpy<2 - are needed)."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging: warnings and up only
    stubbed = []
    if importlib.util.find_spec("matplotlib") is None:
        for name in ("matplotlib", "matplotlib.pyplot"):
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                stubbed.append(name)
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as e:
        raise AnimateError("--landmarks mesh needs mediapipe 0.10.21: pip install --no-deps mediapipe==0.10.21 "
                           f"&& pip install 'animate-cli[mesh]' ({e})") from e
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)
    return face_mesh


def mesh_available() -> bool:
    """True when mediapipe is installed (its import is not attempted: that costs about a second)."""
    return importlib.util.find_spec("mediapipe") is not None


class MeshDetector(LandmarkDetector):
    """mediapipe's 478-point mesh with irises, mapped onto the 68 iBUG points; dlib's HOG finds the faces.

    The mesh runs on a square crop around the given box, so it fits exactly the face the tracker
    follows (mediapipe's own detector misses large faces in whole images: Einstein's portrait)."""

    name = "mesh"

    def __init__(self):
        if "mesh" not in _CACHE:
            face_mesh = _import_face_mesh()
            # mediapipe and TF Lite print start-up chatter straight to stderr (past any log level) when the graph
            # is built and on the first face it finds (mesh()): not for the user's eyes
            with stderr_silenced():
                _CACHE["mesh"] = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                    refine_landmarks=True, min_detection_confidence=0.3)
                _CACHE["mesh"].process(np.zeros((MESH_CROP, MESH_CROP, 3), np.uint8))  # starts the graph
            _CACHE["mesh_quiet"] = False
        self._mesh = _CACHE["mesh"]
        self._boxes = DlibDetector()

    def detect(self, image, work_size=None):
        return self._boxes.detect(image, work_size=work_size)

    def mesh(self, image, box) -> np.ndarray | None:
        """(478,2) float32 mesh vertices in image pixels, or None when the mesh finds no face there."""
        image = _as_rgb(image)
        x0, y0, x1, y1 = [float(v) for v in box]
        a = MESH_CROP / (MESH_MARGIN * max(x1 - x0, y1 - y0, 1.0))
        M = np.array([[a, 0, MESH_CROP / 2 - a * (x0 + x1) / 2], [0, a, MESH_CROP / 2 - a * (y0 + y1) / 2]])
        crop = cv2.warpAffine(image, M, (MESH_CROP, MESH_CROP), flags=cv2.INTER_AREA if a < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        if _CACHE["mesh_quiet"]:
            found = self._mesh.process(crop).multi_face_landmarks
        else:
            with stderr_silenced():
                found = self._mesh.process(crop).multi_face_landmarks
            _CACHE["mesh_quiet"] = bool(found)
        if not found:
            return None
        pts = np.array([(p.x, p.y) for p in found[0].landmark], np.float64) * MESH_CROP
        return ((pts - M[:, 2]) / a).astype(np.float32)

    def fit(self, image, box):
        pts = self.mesh(image, box)
        if pts is None:
            return FaceFit(np.full((68, 2), np.nan, np.float32), np.full((2, 2), np.nan, np.float32))
        return FaceFit(pts[list(MESH_TO_IBUG)], pts[list(MESH_IRISES)])

    def landmarks(self, image, box):
        return self.fit(image, box).points

    def box_from_landmarks(self, pts):
        return self._boxes.box_from_landmarks(pts)


LANDMARK_BACKENDS = ("auto", "fan", "dlib", "mesh")


def make_detector(name: str = "auto", device: str = "cpu") -> LandmarkDetector:
    """"auto" prefers mediapipe's mesh when it is installed (it sees blinks that dlib's eyelid points miss, and
    irises), then fan when its weights are already cached (never downloads), else dlib."""
    if name == "auto":
        name = "mesh" if mesh_available() else "fan" if fan_weights_cached() else "dlib"
    if name == "fan":
        return FanDetector(device)
    if name == "dlib":
        return DlibDetector()
    if name == "mesh":
        return MeshDetector()
    raise AnimateError(f"unknown landmark backend {name!r} (choose {', '.join(LANDMARK_BACKENDS)})")


def image_landmarks(detector: LandmarkDetector, image: np.ndarray, face_index: int = 0,
                    warn: Callable[[str], None] | None = None, name: str = "the image") -> np.ndarray:
    """Landmarks of one face of a still image (the portrait); the largest face unless told otherwise."""
    boxes = detector.detect(image)
    if not boxes:
        raise AnimateError(f"no face found in {name}")
    if face_index < 0 or face_index >= len(boxes):
        raise AnimateError(f"--face-index {face_index} is out of range: {len(boxes)} face(s) found in {name}")
    if len(boxes) > 1 and face_index == 0 and warn is not None:
        warn(f"{len(boxes)} faces found, using the largest (--face-index to pick another)")
    pts = detector.landmarks(image, boxes[face_index])
    if not np.isfinite(pts).all():
        raise AnimateError(f"no landmarks could be fitted to the face in {name} ({detector.name})")
    return pts
