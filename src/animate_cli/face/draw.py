"""The paper's landmark image y: each facial part a coloured polyline on black.

Checkpoints are trained on this exact drawing, so parts, colours and thickness are fixed forever;
any change must bump DRAWING_VERSION (checkpoints record it).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

DRAWING_VERSION = 1

# (name, slice into the 68 iBUG points, closed polyline?)
PART_SLICES = (
    ("jaw", slice(0, 17), False),
    ("right_brow", slice(17, 22), False),
    ("left_brow", slice(22, 27), False),
    ("nose_bridge", slice(27, 31), False),
    ("nostrils", slice(31, 36), False),
    ("right_eye", slice(36, 42), True),
    ("left_eye", slice(42, 48), True),
    ("outer_lips", slice(48, 60), True),
    ("inner_lips", slice(60, 68), True),
)
# RGB, one distinct colour per part (left/right brows and eyes differ so G can tell them apart).
PART_COLORS = (
    (255, 255, 255),  # jaw
    (255, 0, 0),      # right brow
    (0, 255, 0),      # left brow
    (0, 0, 255),      # nose bridge
    (255, 255, 0),    # nostrils
    (255, 0, 255),    # right eye
    (0, 255, 255),    # left eye
    (255, 128, 0),    # outer lips
    (128, 0, 255),    # inner lips
)

_SHIFT = 4  # cv2 sub-pixel bits: keeps thin lines smooth at low resolutions


def thickness_for(size: int) -> int:
    """~2 px at 256, scaled with the image so the drawing looks the same at any resolution."""
    return max(1, int(round(2 * size / 256)))


def draw_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size,size,3) uint8 RGB landmark image for (68,2) points already in crop pixels."""
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68,2) landmarks, got {pts.shape}")
    image = np.zeros((size, size, 3), np.uint8)
    # Clamp far-away points: cv2 fixed-point coordinates overflow otherwise; lines still leave the frame.
    fixed = np.round(np.clip(np.nan_to_num(pts), -4 * size, 5 * size) * (1 << _SHIFT)).astype(np.int32)
    width = thickness_for(size)
    for (_, part, closed), color in zip(PART_SLICES, PART_COLORS):
        cv2.polylines(image, [fixed[part].reshape(-1, 1, 2)], closed, color, width, cv2.LINE_AA, _SHIFT)
    return image


def landmark_tensor(landmarks_batch: np.ndarray, size: int) -> torch.Tensor:
    """(B,3,size,size) float32 in [-1,1]: the model-side form of a batch of landmark images."""
    batch = np.asarray(landmarks_batch)
    if batch.ndim == 2:
        batch = batch[None]
    images = np.stack([draw_landmarks(p, size) for p in batch])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
