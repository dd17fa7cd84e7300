"""The mesh backend (mediapipe, optional) and steady tracking: irises inside the eyes, the 68 points where
dlib puts them, identical frames giving identical points, and a one-line error without mediapipe."""
import sys

import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.face import landmarks as lm
from animate_cli.face.measures import interocular
from animate_cli.face.track import track_faces
from animate_cli.video import read_image


@pytest.fixture(scope="module")
def portrait():
    from conftest import EXAMPLES

    return read_image(EXAMPLES / "portrait.png")


def inside_polygon(poly, xy):
    import cv2

    return cv2.pointPolygonTest(np.asarray(poly, np.float32).reshape(-1, 1, 2), tuple(map(float, xy)), False) >= 0


def test_identical_frames_give_identical_points(portrait):
    det = lm.make_detector("dlib")
    fits = list(track_faces([portrait] * 20, det, smooth=False, redetect_every=5))
    assert all(f is not None for f in fits)
    first = fits[0].points
    assert max(float(np.abs(f.points - first).max()) for f in fits) == 0.0
    for k, eye in enumerate((slice(36, 42), slice(42, 48))):  # dlib's irises: the dark blob, inside the eye
        assert inside_polygon(first[eye], fits[0].irises[k])


def test_mesh_matches_dlib_and_finds_irises(portrait):
    if not lm.mesh_available():
        pytest.skip("mediapipe is not installed (the optional mesh backend)")
    mesh, dlib_det = lm.make_detector("mesh"), lm.make_detector("dlib")
    box = dlib_det.detect(portrait)[0]
    fit, ref = mesh.fit(portrait, box), dlib_det.landmarks(portrait, box)
    assert fit.points.shape == (68, 2) and fit.irises.shape == (2, 2)
    io = float(interocular(ref)[0])
    err = np.linalg.norm(fit.points - ref, axis=1) / io
    assert err[36:48].mean() < 0.06 and err[60:68].mean() < 0.08, err
    for k, eye in enumerate((slice(36, 42), slice(42, 48))):
        assert inside_polygon(fit.points[eye], fit.irises[k])
    assert np.isfinite(lm.image_landmarks(mesh, portrait)).all()
    blank = np.full_like(portrait, 128)
    assert not np.isfinite(mesh.fit(blank, box).points).any()  # no face in the box: NaN, not a guess


def test_mesh_without_mediapipe_is_one_clear_line(monkeypatch):
    monkeypatch.delitem(lm._CACHE, "mesh", raising=False)
    for name in [m for m in sys.modules if m == "mediapipe" or m.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(AnimateError, match="pip install --no-deps mediapipe==0.10.21"):
        lm.make_detector("mesh")


def test_auto_prefers_the_mesh_when_installed(monkeypatch):
    """The mesh sees blinks that dlib's eyelid points miss: it drives whenever mediapipe is there."""
    monkeypatch.setattr(lm, "fan_weights_cached", lambda: True)
    monkeypatch.setattr(lm, "mesh_available", lambda: True)
    monkeypatch.setattr(lm, "MeshDetector", lambda: "the mesh")
    assert lm.make_detector("auto") == "the mesh"


def test_the_mesh_starts_without_chatter_on_stderr():
    """mediapipe and TF Lite print start-up lines straight to the process's stderr; the user sees none."""
    if not lm.mesh_available():
        pytest.skip("mediapipe is not installed")
    import os
    import subprocess

    from conftest import EXAMPLES, ROOT

    code = ("from animate_cli.face.landmarks import make_detector, image_landmarks\n"
            "from animate_cli.video import read_image\n"
            f"img = read_image({str(EXAMPLES / 'portrait.png')!r})\n"
            "print(image_landmarks(make_detector('mesh'), img).shape)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert done.returncode == 0 and done.stdout.strip() == "(68, 2)", done.stderr
    assert done.stderr == ""
