"""A drawn face with exact 68 landmarks, for tests that must know where the lips, teeth and eyes are."""
import cv2
import numpy as np

SKIN, LIPS, MOUTH_INSIDE, TEETH, SCLERA, IRIS = (200, 160, 130), (170, 50, 60), (40, 10, 15), (245, 245, 235), \
    (250, 250, 250), (40, 60, 120)


def face_landmarks(size: int = 128, mouth_gap: float = 0.25, eye_gap: float = 0.09) -> np.ndarray:
    """(68,2) iBUG points of a frontal face; gaps in inter-ocular distances (outer eye corners, 0.46·size)."""
    c, s = size / 2, size
    iod = 0.46 * s
    theta = np.linspace(np.pi, 0, 17)
    jaw = np.stack([c + 0.36 * s * np.cos(theta), c + 0.4 * s * np.sin(theta)], 1)
    bx = np.linspace(-0.27, -0.07, 5) * s
    brows = np.concatenate([np.stack([c + bx, c - 0.2 * s - 0.02 * s * np.sin(np.linspace(0, np.pi, 5))], 1),
                            np.stack([c - bx[::-1], c - 0.2 * s - 0.02 * s * np.sin(np.linspace(0, np.pi, 5))], 1)])
    nose = np.concatenate([np.stack([np.full(4, c), c + np.linspace(-0.14, 0.02, 4) * s], 1),
                           np.stack([c + np.linspace(-0.07, 0.07, 5) * s, np.full(5, c + 0.06 * s)], 1)])
    he = eye_gap * iod / 2

    def eye(ex, ey):
        return np.array([[ex - 0.07 * s, ey], [ex - 0.025 * s, ey - he], [ex + 0.025 * s, ey - he],
                         [ex + 0.07 * s, ey], [ex + 0.025 * s, ey + he], [ex - 0.025 * s, ey + he]])

    eyes = np.concatenate([eye(c - 0.16 * s, c - 0.1 * s), eye(c + 0.16 * s, c - 0.1 * s)])
    my, g = c + 0.2 * s, mouth_gap * iod / 2
    top, bottom = my - g, my + g
    outer = np.array([[c - 0.13 * s, my], [c - 0.09 * s, top - 0.03 * s], [c - 0.045 * s, top - 0.045 * s],
                      [c, top - 0.04 * s], [c + 0.045 * s, top - 0.045 * s], [c + 0.09 * s, top - 0.03 * s],
                      [c + 0.13 * s, my], [c + 0.09 * s, bottom + 0.035 * s], [c + 0.045 * s, bottom + 0.05 * s],
                      [c, bottom + 0.055 * s], [c - 0.045 * s, bottom + 0.05 * s], [c - 0.09 * s, bottom + 0.035 * s]])
    inner = np.array([[c - 0.1 * s, my], [c - 0.05 * s, top], [c, top], [c + 0.05 * s, top],
                      [c + 0.1 * s, my], [c + 0.05 * s, bottom], [c, bottom], [c - 0.05 * s, bottom]])
    return np.concatenate([jaw, brows, nose, eyes, outer, inner]).astype(np.float32)


def _poly(image, pts, colour):
    cv2.fillPoly(image, [np.round(np.asarray(pts) * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)


def draw_face(landmarks: np.ndarray, size: int = 128) -> np.ndarray:
    """(size,size,3) uint8 RGB: a face drawn on its landmarks, teeth in the top half of an open mouth."""
    lm = np.asarray(landmarks, np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([60 + 80 * xx / size, 90 + 60 * yy / size, 140 - 40 * xx / size], -1).astype(np.uint8)
    centre = lm[:17].mean(0)
    cv2.ellipse(image, (int(centre[0]), int(lm[27:31, 1].mean())), (int(0.37 * size), int(0.48 * size)), 0, 0, 360,
                SKIN, -1, cv2.LINE_AA)
    for part in (slice(17, 22), slice(22, 27)):
        cv2.polylines(image, [np.round(lm[part]).astype(np.int32)], False, (70, 40, 30), 2, cv2.LINE_AA)
    cv2.polylines(image, [np.round(lm[27:31]).astype(np.int32)], False, (150, 110, 90), 1, cv2.LINE_AA)
    for eye in (slice(36, 42), slice(42, 48)):
        opening = np.zeros((size, size), np.uint8)
        _poly(opening, lm[eye], 255)
        iris = image.copy()
        _poly(iris, lm[eye], SCLERA)
        cx, cy = lm[eye].mean(0)
        cv2.circle(iris, (int(round(cx)), int(round(cy))), max(2, size // 40), IRIS, -1, cv2.LINE_AA)
        a = opening[..., None] / 255.0
        image = np.round(image * (1 - a) + iris * a).astype(np.uint8)
    _poly(image, lm[48:60], LIPS)
    inside = np.zeros((size, size), np.uint8)
    _poly(inside, lm[60:68], 255)
    teeth = np.full_like(image, MOUTH_INSIDE)
    top, bottom = lm[61:64, 1].mean(), lm[65:68, 1].mean()
    teeth[: int(round(top + 0.45 * (bottom - top)))] = TEETH
    a = inside[..., None] / 255.0
    return np.round(image * (1 - a) + teeth * a).astype(np.uint8)


def face(size: int = 128, mouth_gap: float = 0.25, eye_gap: float = 0.09) -> tuple[np.ndarray, np.ndarray]:
    """(image, landmarks) of a drawn face."""
    lm = face_landmarks(size, mouth_gap, eye_gap)
    return draw_face(lm, size), lm


def white_share(image: np.ndarray, box, level: int = 225) -> float:
    """Share of near-white pixels (teeth, sclera) in the square box (x0, y0, side)."""
    x0, y0, side = (int(round(v)) for v in box)
    patch = image[max(y0, 0):y0 + side, max(x0, 0):x0 + side].astype(int)
    return float((patch.min(-1) >= level).mean())
