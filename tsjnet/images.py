"""Image I/O and colour for fusion: BT.601 luma/chroma, pairing IR and visible folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImagePair:
    name: str  # the file stem, shared by both folders
    infrared: Path
    visible: Path


@dataclass
class Matched:
    """Files sharing a stem across folders: ``files[stem]`` lists one path per folder, in order."""

    files: dict[str, list[Path]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def list_images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def match_by_stem(*folders: Path) -> Matched:
    """Images present under the same stem in every folder; one missing anywhere is a reported
    problem naming the file, and the rest go on."""
    listings = [list_images(Path(folder)) for folder in folders]
    matched = Matched()
    for name in sorted(set().union(*listings)):
        missing = [str(folder) for folder, images in zip(folders, listings) if name not in images]
        if missing:
            present = next(images[name] for images in listings if name in images)
            matched.problems.append(f"{present}: no partner named {name}.* in {', '.join(missing)}")
        else:
            matched.files[name] = [images[name] for images in listings]
    return matched


def pair_folders(infrared_dir: Path, visible_dir: Path) -> tuple[list[ImagePair], list[str]]:
    matched = match_by_stem(infrared_dir, visible_dir)
    return [ImagePair(name, ir, vi) for name, (ir, vi) in matched.files.items()], matched.problems


def read_image(path: Path, colour: bool) -> np.ndarray:
    """float32 in 0..255: BGR (H x W x 3) when ``colour``, else grey (colour files through OpenCV's
    BT.601 BGR2GRAY on the stored integers, rounded, as fusion evaluations read them); 16-bit files
    are scaled by 1/257 so that 65535 maps to 255."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if colour and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif not colour and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = 1 / 257 if image.dtype == np.uint16 else 1.0
    return image.astype(np.float32) * scale


def split_luma(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Y, YCrCb) with BT.601 full-range coefficients (Y = 0.299 R + 0.587 G + 0.114 B)."""
    ycrcb = cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2YCrCb)
    return ycrcb[..., 0].copy(), ycrcb


def merge_luma(luma: np.ndarray, ycrcb: np.ndarray) -> np.ndarray:
    """The visible image's own Cr/Cb around a new Y, back to 8-bit BGR (OpenCV's channel order)."""
    recombined = ycrcb.copy()
    recombined[..., 0] = luma
    return to_uint8(cv2.cvtColor(recombined, cv2.COLOR_YCrCb2BGR))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
