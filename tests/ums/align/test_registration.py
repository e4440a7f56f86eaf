from __future__ import annotations

from tests.ums.align.conftest import at_offset, real_pair, similarity_flow
import cv2
import numpy as np
import pytest
import scipy.io

from tests.conftest import shared_data
from ums.align import RegistrationFailure, register
from ums.align.flow import endpoint_error, flow_from_transform, grid_sample_to_flow, scoring_mask, valid_mask, warp_with_flow




def moved(image: np.ndarray, transform_fixed_to_moving: np.ndarray) -> np.ndarray:
    """The image a camera displaced by ``transform`` would see: moving(T p) = image(p)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, transform_fixed_to_moving[:2], (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def rigid(tx: float, ty: float, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    angle = np.radians(degrees)
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = centre
    return np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty], [0, 0, 1.0]])


@pytest.mark.parametrize("dataset, name", [("roadscene", None), ("msrs", "00055D.png"), ("llvip/train", "010001.jpg")])
def test_known_translation_is_recovered_on_real_pairs(dataset, name):
    folder = shared_data(*dataset.split("/"))
    name = name or sorted(p.name for p in (folder / "ir").iterdir())[3]
    ir, vi = real_pair(dataset, name)
    if ir.shape[0] > 600:  # LLVIP is 1280x1024: work on the thermal-grid size
        ir, vi = cv2.resize(ir, (640, 512), interpolation=cv2.INTER_AREA), cv2.resize(vi, (640, 512), interpolation=cv2.INTER_AREA)
    # the "aligned" pair is itself off by a pixel or two: measure relative to its own estimate
    floor = register(ir, vi, motion="translation")
    shift = np.array([[1, 0, 6.4], [0, 1, -3.7], [0, 0, 1.0]])
    found = register(ir, moved(vi, shift), motion="translation")
    recovered = np.subtract(found.translation, floor.translation)
    assert recovered == pytest.approx((6.4, -3.7), abs=0.35)
    assert found.score > 0.2 and found.details["converged"]


def test_euclidean_recovers_rotation_and_shift():
    ir, vi = real_pair("roadscene", sorted(p.name for p in (shared_data("roadscene") / "ir").iterdir())[3])
    floor = register(ir, vi, motion="euclidean")
    displacement = rigid(-5.0, 2.5, 1.2, ((ir.shape[1] - 1) / 2, (ir.shape[0] - 1) / 2))
    # fixed(p) ~ vi(F p) and moving(D q) = vi(q), so fixed(p) ~ moving(D F p)
    truth = displacement @ floor.transform
    found = register(ir, moved(vi, displacement), motion="euclidean")
    mask = valid_mask(found.flow, vi.shape, erode_px=8)
    assert endpoint_error(found.flow, flow_from_transform(truth, *ir.shape), mask) < 0.5


def test_flow_convention_reproduces_superfusion_warps():
    """SuperFusion's grids are grid_sample(align_corners=False) grids; as pixel flows, warping the
    aligned IR with them must give their warped IR."""
    root = shared_data("registration_superfusion", "MSRS")
    for mat in sorted((root / "flow").glob("*.mat"))[:3]:
        name = mat.name[: -len(".mat")]
        flow = grid_sample_to_flow(scipy.io.loadmat(str(mat))["flow"])
        ir = cv2.imread(str(shared_data("msrs", "ir", name)), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        expected = cv2.imread(str(root / "ir_warp" / name), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        warped = warp_with_flow(ir, flow)
        inside = valid_mask(flow, ir.shape, erode_px=2)
        assert np.abs(warped - expected)[inside].mean() < 1.0  # grey levels; 8-bit rounding included
        # the align_corners=True reading of the same grid is measurably worse
        h, w = ir.shape
        grid = scipy.io.loadmat(str(mat))["flow"][0].astype(np.float64)
        wrong = np.stack([(grid[..., 0] + 1) * (w - 1) / 2, (grid[..., 1] + 1) * (h - 1) / 2], -1)
        wrong_flow = (wrong - np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1)).astype(np.float32)
        assert np.abs(warp_with_flow(ir, wrong_flow) - expected)[inside].mean() > np.abs(warped - expected)[inside].mean()


def test_flow_and_warp_agree():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((120, 160)).astype(np.float32), (0, 0), 3)
    registration = register(image, moved(image, rigid(3.0, -2.0, 0.0, (80, 60))), motion="translation")
    np.testing.assert_allclose(registration.flow[60, 80], registration.translation, atol=1e-4)
    direct = registration.warp(moved(image, rigid(3.0, -2.0, 0.0, (80, 60))))
    by_flow = warp_with_flow(moved(image, rigid(3.0, -2.0, 0.0, (80, 60))), registration.flow)
    assert np.abs(direct - by_flow)[10:-10, 10:-10].max() < 1e-3


def test_bad_inputs_fail_clearly():
    flat = np.full((64, 80), 128, np.uint8)
    textured = np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)
    with pytest.raises(RegistrationFailure, match="no structure"):
        register(flat, textured)
    with pytest.raises(RegistrationFailure, match="size mismatch"):
        register(textured, textured[:32])
    with pytest.raises(ValueError, match="unknown registration method"):
        register(textured, textured, method="magic")
    with pytest.raises(ValueError, match="motion"):
        register(textured, textured, motion="homography")
    identity = register(textured, textured, method="identity")
    assert not identity.flow.any() and identity.score == 0.0


def test_the_learned_method_refuses_a_dense_matcher_checkpoint(tmp_path):
    """The from-scratch dense matcher is research code in bench/ now: its checkpoints get one line
    saying so, before any registration runs."""
    from tests.ums.align.learned.conftest import dense_checkpoint

    textured = np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)
    weights = dense_checkpoint(tmp_path / "matcher.pt")
    with pytest.raises(ValueError, match=r"matcher.pt: a dense-matcher checkpoint; the dense matcher is research code"):
        register(textured, textured, method="learned", weights=weights)


def similarity(tx: float, ty: float, degrees: float, scale: float, centre: tuple[float, float]) -> np.ndarray:
    transform = rigid(tx, ty, degrees, centre)
    cx, cy = centre
    scaling = np.array([[scale, 0, cx - scale * cx], [0, scale, cy - scale * cy], [0, 0, 1.0]])
    return transform @ scaling


def test_similarity_recovers_scale_where_euclidean_cannot():
    ir, vi = real_pair("llvip/train", "010001.jpg")
    ir, vi = cv2.resize(ir, (640, 512), interpolation=cv2.INTER_AREA), cv2.resize(vi, (640, 512), interpolation=cv2.INTER_AREA)
    floor = register(ir, vi, motion="similarity")
    displacement = similarity(4.0, -7.0, -1.5, 1.025, (319.5, 255.5))
    truth = flow_from_transform(displacement @ floor.transform, 512, 640)
    errors = {}
    for motion in ("euclidean", "similarity"):
        found = register(ir, moved(vi, displacement), motion=motion)
        errors[motion] = endpoint_error(found.flow, truth, valid_mask(found.flow, vi.shape, erode_px=8))
    assert errors["similarity"] < 0.5 < 2 < errors["euclidean"], errors


def test_the_coarse_search_reaches_twenty_pixels():
    ir, vi = real_pair("llvip/train", "010010.jpg")
    ir, vi = cv2.resize(ir, (640, 512), interpolation=cv2.INTER_AREA), cv2.resize(vi, (640, 512), interpolation=cv2.INTER_AREA)
    floor = register(ir, vi, motion="translation")
    shift = np.array([[1, 0, -19.0], [0, 1, 17.5], [0, 0, 1.0]])
    found = register(ir, moved(vi, shift), motion="translation")
    assert np.subtract(found.translation, floor.translation) == pytest.approx((-19.0, 17.5), abs=0.35)


def test_scoring_mask_keeps_true_samples_8_px_inside_and_off_the_zero_border():
    truth = np.zeros((40, 50, 2), np.float32)
    truth[..., 0] = 5.0  # every fixed pixel samples 5 px to its right in the moving image
    fixed = np.ones((40, 50), np.uint8)
    fixed[:, :3] = 0  # the warp's zero border
    mask = scoring_mask(truth, fixed, (40, 50))
    rows, cols = np.nonzero(mask)
    # samples x + 5 leave the moving image after x = 44; 8 px of erosion from that edge leaves 36.
    # The frame's own edges are not eroded, and the zero border (x < 3) is dropped
    assert (rows.min(), rows.max()) == (0, 39)
    assert (cols.min(), cols.max()) == (3, 36)


def test_gradient_representation_is_the_same_at_any_memory_address():
    """Process pools and Dask workers hold the same image at other addresses: the bits must not care."""
    from ums.align.ecc import gradient_representation

    image = cv2.GaussianBlur(np.random.default_rng(5).integers(0, 255, (512, 640, 3), np.uint8), (0, 0), 2.0)

    assert len({gradient_representation(at_offset(image, offset)).tobytes() for offset in (0, 4, 8, 12, 16, 32, 48)}) == 1


def test_one_default_motion_for_the_api_the_stage_its_yaml_and_the_docs():
    import inspect

    import yaml

    from tests.conftest import PROJECT_ROOT
    from ums.align.ecc import DEFAULT_MOTION, ecc_register
    from ums.align.registration import METHODS
    from ums.align.stage import AlignConfig

    assert inspect.signature(ecc_register).parameters["motion"].default == DEFAULT_MOTION
    assert inspect.signature(METHODS["ecc"]).parameters["motion"].default == DEFAULT_MOTION
    assert AlignConfig().motion == DEFAULT_MOTION
    assert yaml.safe_load((PROJECT_ROOT / "pipelines" / "align.yaml").read_text())["motion"] == DEFAULT_MOTION
    for doc in ("README.md", "docs/registration.md"):
        assert f"{DEFAULT_MOTION} by default" in (PROJECT_ROOT / doc).read_text(), doc


def test_the_floor_free_disagreement_has_its_known_answer():
    """One pair, its moving image warped twice by known maps: perfect registrations agree to 0 px
    whatever the maps; a registration off by (1, 0) px (at scale 1) disagrees by exactly 1 px."""
    from ums.align.flow import disagreement

    h, w = 96, 128
    map_1 = flow_from_transform(rigid(3.0, -2.0, 0.0, (0, 0)), h, w)
    map_2 = flow_from_transform(rigid(-5.0, 4.0, 0.0, (0, 0)), h, w)
    perfect_1, perfect_2 = -map_1, -map_2  # moving_k(q) = moving(q + map_k): fixed x is seen at x - map_k
    inside = (slice(10, -10), slice(10, -10))
    assert np.abs(disagreement(perfect_1, map_1, perfect_2, map_2)[inside]).max() < 1e-5
    off = perfect_2 + np.array([1.0, 0.0], np.float32)
    assert np.allclose(disagreement(perfect_1, map_1, off, map_2)[inside], 1.0, atol=1e-5)
    # a rotation and scale in the map: the perfect flow is its inverse, still 0 px apart
    similarity = np.array([[1.02 * np.cos(0.03), -1.02 * np.sin(0.03), 4.0], [1.02 * np.sin(0.03), 1.02 * np.cos(0.03), -3.0], [0, 0, 1]])
    map_3 = flow_from_transform(similarity, h, w)
    perfect_3 = flow_from_transform(np.linalg.inv(similarity), h, w)
    assert np.abs(disagreement(perfect_1, map_1, perfect_3, map_3)[inside]).max() < 1e-3




def test_the_moving_masks_own_border_does_not_pull_ecc():
    """A real pair's visible image warped twice (zero outside, its coverage as the mask, as crop's
    valid.png): the two registrations agree to a tenth of a pixel. With the band inside the mask
    kept, the mask's border edge pulled the two 5.6 px apart on this pair (bench/RESULTS.md)."""
    from ums.align.flow import compose, disagreement

    ir, vi = real_pair("roadscene", "FLIR_03909.jpg")
    h, w = ir.shape
    flows, maps = [], []
    for degrees, scale, shift in ((1.5, 1.02, (12.0, -8.0)), (-1.0, 0.98, (-15.0, 10.0))):
        map_k = similarity_flow(degrees, scale, shift, h, w)
        moving = warp_with_flow(vi, map_k)
        coverage = warp_with_flow(np.full((h, w), 255, np.uint8), map_k)
        flows.append(register(ir, moving, moving_mask=coverage).flow)
        maps.append(map_k)
    inside = np.ones((h, w), bool)
    for flow, map_k in zip(flows, maps):
        inside &= valid_mask(flow, (h, w), erode_px=8) & valid_mask(compose(map_k, flow), (h, w), erode_px=8)
    assert disagreement(flows[0], maps[0], flows[1], maps[1])[inside].mean() < 0.3


def test_an_affine_flow_is_within_2e_5_px_of_its_float64_value():
    """The affine flow sums a row term and a column term in float32 (2-3x faster than a float64 sum
    per pixel); at 1280x1024 with 5 % of scale and 40 px of shift it stays within 2e-5 px."""
    h, w = 1024, 1280
    c, s = 1.05 * np.cos(np.radians(2.0)), 1.05 * np.sin(np.radians(2.0))
    transform = np.array([[c, -s, 40.0], [s, c, -37.5], [0, 0, 1.0]])
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    exact = np.stack([(c - 1) * xs - s * ys + 40.0, s * xs + (c - 1) * ys - 37.5], axis=-1)
    assert np.abs(flow_from_transform(transform, h, w) - exact).max() < 2e-5
