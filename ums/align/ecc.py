"""Classical IR/visible registration: multi-scale ECC on gradient-magnitude images.

Raw intensities of the two modalities are not related by any affine map (polarity flips between
materials), but their edges coincide; ECC on smoothed, normalised gradient magnitudes is the one
classical method that held up on real pairs (registration.md §4). Low-order models only:
translation, Euclidean or similarity (Euclidean + scale); affine and homography drifted on real
pairs. OpenCV's ``findTransformECC`` has no similarity model, so that one is the same ECC
algorithm (Evangelidis & Psarakis, PAMI 2008) with the 4-parameter similarity Jacobian, below.
A coarse exhaustive translation search on the 1/4-scale gradient maps gives every model its start:
ECC's basin is a few pixels of the coarsest level, the search covers ``search_px``.
"""

from __future__ import annotations

import cv2
import numpy as np

MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "similarity": None}


def gradient_representation(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gradient magnitude after Gaussian smoothing, divided by its 99th percentile, clipped to [0, 1]."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = grey.astype(np.float32)
    if grey.max() > 255:  # 16-bit counts: bring to the same order as 8-bit images
        low, high = np.percentile(grey, (1, 99))
        grey = (grey - low) * (255.0 / max(high - low, 1e-6))
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    scale = np.percentile(magnitude, 99)
    if scale <= 1e-6:
        return np.zeros_like(magnitude)
    return np.clip(magnitude / scale, 0, 1)


def ecc_register(
    fixed: np.ndarray,
    moving: np.ndarray,
    motion: str = "translation",
    levels: int = 3,
    iterations: int = 100,
    epsilon: float = 1e-5,
    initial: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    search_px: float = 24.0,
) -> tuple[np.ndarray, float, bool]:
    """Estimate the 2x3 transform mapping fixed pixels to moving pixels, coarse to fine.

    Returns (transform, correlation at the finest level, converged). A level that fails to
    converge keeps the previous level's estimate.
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {sorted(MOTIONS)}, not {motion!r}")
    fixed_rep = gradient_representation(fixed)
    moving_rep = gradient_representation(moving)
    if not fixed_rep.any() or not moving_rep.any():
        raise RegistrationFailure("an image has no structure (no gradients)")
    transform = np.eye(2, 3, dtype=np.float32) if initial is None else initial.astype(np.float32).copy()
    if search_px > 0:
        transform = coarse_translation_search(fixed_rep, moving_rep, transform, search_px)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, epsilon)
    correlation, converged = 0.0, True
    for level in reversed(range(levels)):
        scale = 1.0 / (2**level)
        f = _downscale(fixed_rep, scale)
        m = _downscale(moving_rep, scale)
        mask = None if moving_mask is None else _downscale(moving_mask, scale, cv2.INTER_NEAREST)
        scaled = _scale_transform(transform, scale)
        try:
            if motion == "similarity":
                # converges in 5-10 iterations from the previous level; the cap bounds oscillation
                correlation, scaled = ecc_similarity(f, m, scaled, min(iterations, 25), max(epsilon, 1e-4), mask)
            else:
                correlation, scaled = cv2.findTransformECC(f, m, scaled, MOTIONS[motion], criteria, mask, 5)
            transform = _scale_transform(scaled, 1.0 / scale)
            converged = True
        except (cv2.error, RegistrationFailure):
            converged = False
    if not converged:
        correlation = _correlation(fixed_rep, moving_rep, transform)
    return transform, float(max(correlation, 0.0)), converged


def coarse_translation_search(fixed_rep: np.ndarray, moving_rep: np.ndarray, transform: np.ndarray,
                              search_px: float, scale: float = 0.25) -> np.ndarray:
    """Exhaustive normalised cross-correlation of the gradient maps over +-``search_px`` (at 1/4
    scale), around ``transform``; returns it with the best translation added."""
    f = _downscale(fixed_rep, scale)
    h, w = f.shape
    m = cv2.warpAffine(_downscale(moving_rep, scale), _scale_transform(transform, scale), (w, h),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    radius = int(np.ceil(search_px * scale))
    if h <= 4 * radius or w <= 4 * radius:
        return transform
    template = f[radius:-radius, radius:-radius]
    if not template.any():
        return transform
    scores = cv2.matchTemplate(m, template, cv2.TM_CCOEFF_NORMED)
    _, _, _, (best_x, best_y) = cv2.minMaxLoc(scores)
    shifted = transform.astype(np.float64).copy()
    # a fixed pixel p is seen at p + d in the warped moving map: compose d (full-resolution pixels)
    d = np.array([best_x - radius, best_y - radius]) / scale
    shifted[:, 2] += shifted[:, :2] @ d
    return shifted.astype(np.float32)


def ecc_similarity(fixed: np.ndarray, moving: np.ndarray, transform: np.ndarray, iterations: int = 100,
                   epsilon: float = 1e-5, mask: np.ndarray | None = None,
                   tolerance_px: float = 0.02) -> tuple[float, np.ndarray]:
    """ECC maximisation for x' = a x~ - b y~ + tx, y' = b x~ + a y~ + ty (x~, y~ about the centre).

    The same update as OpenCV's findTransformECC (zero-mean images, the closed-form lambda of
    the paper's eq. 28), with the similarity's Jacobian. Returns (correlation, 2x3 transform).
    Pixels outside the overlap are weighted 0 rather than gathered out, so every array keeps
    its size and each iteration is a handful of dense vector operations."""
    h, w = fixed.shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # On large levels every other pixel in each direction carries the same information at a
    # quarter of the cost (the images are smoothed gradient maps).
    stride = 2 if h * w > 100_000 else 1
    ys, xs = np.mgrid[0:h:stride, 0:w:stride].astype(np.float32)
    template_all = np.ascontiguousarray(fixed[::stride, ::stride], dtype=np.float32).ravel()
    xs -= centre[0]
    ys -= centre[1]
    x_flat, y_flat = xs.ravel(), ys.ravel()
    # moving, its gradients (and its validity when masked), sampled together by one remap per iteration
    planes = [moving.astype(np.float32), cv2.Sobel(moving, cv2.CV_32F, 1, 0, ksize=3) / 8,
              cv2.Sobel(moving, cv2.CV_32F, 0, 1, ksize=3) / 8]
    if mask is not None:
        planes.append((mask > 0).astype(np.float32))
    channels = cv2.merge(planes)
    a, b = float(transform[0, 0]), float(transform[1, 0])
    t = transform[:, 2].astype(np.float64) + transform[:, :2].astype(np.float64) @ centre  # about the centre
    params = np.array([a, b, t[0], t[1]])
    reach = max(w, h) / 2  # pixels a change of a or b moves the frame's border
    jacobian = np.empty((4, x_flat.size), np.float32)
    correlation = previous = 0.0
    for _ in range(iterations):
        a, b, tx, ty = params
        map_x = (a * xs - b * ys + tx).astype(np.float32)
        map_y = (b * xs + a * ys + ty).astype(np.float32)
        sampled = cv2.remap(channels, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        if mask is not None:
            valid &= sampled[..., 3] > 0.999
        # float32 planes (half the memory traffic); BLAS dot products accumulate them in wide lanes,
        # and the 4x4 solve below is done in float64
        weight = valid.ravel().astype(np.float32)
        count = float(np.count_nonzero(valid))
        if count < 64:
            raise RegistrationFailure("the images no longer overlap")
        flat = sampled.reshape(-1, sampled.shape[-1])
        image, gx, gy = flat[:, 0], flat[:, 1] * weight, flat[:, 2] * weight
        image = (image - np.float32(float(image @ weight) / count)) * weight
        template = (template_all - np.float32(float(template_all @ weight) / count)) * weight
        np.multiply(gx, x_flat, out=jacobian[0])
        jacobian[0] += gy * y_flat
        np.multiply(gy, x_flat, out=jacobian[1])
        jacobian[1] -= gx * y_flat
        jacobian[2], jacobian[3] = gx, gy
        hessian_inv = np.linalg.pinv((jacobian @ jacobian.T).astype(np.float64))
        image_projection = (jacobian @ image).astype(np.float64)
        template_projection = (jacobian @ template).astype(np.float64)
        image_dot_template = float(template @ image)
        image_energy, template_energy = float(image @ image), float(template @ template)
        correlation = image_dot_template / max(np.sqrt(template_energy * image_energy), 1e-12)
        numerator = image_energy - image_projection @ hessian_inv @ image_projection
        denominator = image_dot_template - template_projection @ hessian_inv @ image_projection
        if denominator <= 0:
            raise RegistrationFailure("ECC diverged (the correlation would decrease)")
        error = np.float32(numerator / denominator) * template - image
        delta = hessian_inv @ (jacobian @ error).astype(np.float64)
        params += delta
        motion_px = np.linalg.norm(delta[2:]) + np.abs(delta[:2]).max() * reach
        if motion_px < tolerance_px or abs(correlation - previous) < epsilon:
            break
        previous = correlation
    return correlation, _similarity_matrix(params, centre)


def _similarity_matrix(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    a, b, tx, ty = params
    linear = np.array([[a, -b], [b, a]])
    offset = np.array([tx, ty]) - linear @ centre
    return np.hstack([linear, offset[:, None]]).astype(np.float32)


class RegistrationFailure(RuntimeError):
    """The pair cannot be registered (no structure, no overlap, no convergence)."""


def _downscale(image: np.ndarray, scale: float, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    if scale == 1.0:
        return image
    size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def _scale_transform(transform: np.ndarray, scale: float) -> np.ndarray:
    """The same motion expressed on an image resized by ``scale`` (pixel-centre convention)."""
    matrix = np.vstack([transform, [0, 0, 1]]).astype(np.float64)
    s = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])
    return (s @ matrix @ np.linalg.inv(s))[:2].astype(np.float32)


def _correlation(fixed_rep: np.ndarray, moving_rep: np.ndarray, transform: np.ndarray) -> float:
    warped = cv2.warpAffine(moving_rep, transform, fixed_rep.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return float(cv2.computeECC(fixed_rep, warped))
