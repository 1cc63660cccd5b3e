"""Per-object measurements (what workers send back instead of label images)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tasks.decisions import FrameGeometry, detections_from_labels, detections_from_objects
from tasks.inference import background_level, measure_objects


def disks(shape: tuple[int, int], centres: list[tuple[int, int, int]]) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (r, c, radius) in enumerate(centres, start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = k
    return labels


def test_measurements_match_scipy_ndimage() -> None:
    rng = np.random.default_rng(0)
    labels = disks((200, 300), [(20, 30, 8), (100, 150, 15), (190, 290, 12), (60, 250, 5)])
    labels[labels == 4] = 9  # gaps in the label ids
    image = rng.integers(0, 4000, labels.shape).astype(np.uint16)
    table = measure_objects(labels, image, model_ms=12.5)
    ids = np.array([1, 2, 3, 9])
    np.testing.assert_array_equal(table.label, ids)
    np.testing.assert_array_equal(table.area_px, ndimage.sum_labels(labels > 0, labels, ids))
    centres = np.array(ndimage.center_of_mass(labels > 0, labels, ids))
    np.testing.assert_allclose(table.centroid_row, centres[:, 0])
    np.testing.assert_allclose(table.centroid_col, centres[:, 1])
    np.testing.assert_allclose(table.mean_intensity, ndimage.mean(image, labels, ids))
    slices = ndimage.find_objects(labels)
    for row, k in zip(table.bbox, ids, strict=True):
        sl = slices[k - 1]
        assert tuple(row) == (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    # the disk at (190, 290) r=12 is cut by the bottom and right edges
    np.testing.assert_array_equal(table.touches_border(), [False, False, True, False])
    assert table.model_ms == 12.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounding_boxes_of_ragged_objects_match_find_objects(seed: int) -> None:
    """Objects of any shape (rings, scattered pixels, ids with gaps) get find_objects' boxes."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((120, 170)) < 0.3, rng.integers(1, 40, (120, 170)), 0)
    labels = labels.astype(np.int32)
    labels[labels == 7] = 0  # an id with no pixels
    table = measure_objects(labels, np.ones(labels.shape, np.uint16))
    slices = ndimage.find_objects(labels)
    expected = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in slices if s is not None]
    np.testing.assert_array_equal(table.bbox, np.array(expected))
    np.testing.assert_array_equal(table.label, np.unique(labels[labels > 0]))


def test_empty_and_bad_input() -> None:
    empty = measure_objects(np.zeros((10, 10), np.int32), np.ones((10, 10)))
    assert len(empty) == 0 and empty.bbox.shape == (0, 4)
    with pytest.raises(ValueError, match="same shape"):
        measure_objects(np.zeros((10, 10), np.int32), np.ones((10, 11)))
    with pytest.raises(ValueError, match="non-negative"):
        measure_objects(-np.ones((4, 4), np.int32), np.ones((4, 4)))


def test_detections_from_objects_equal_detections_from_labels() -> None:
    labels = disks((128, 160), [(30, 40, 9), (90, 120, 14), (0, 80, 6)])
    image = (labels * 100 + 50).astype(np.uint16)
    geometry = FrameGeometry.simple(1000.0, 2000.0, 160, 128, 0.5)
    from_objects = detections_from_objects(measure_objects(labels, image), geometry, tile=3)
    assert from_objects == detections_from_labels(labels, image, geometry, tile=3)
    assert [d.touches_border for d in from_objects] == [False, False, True]
    assert from_objects[1].score == pytest.approx(250.0)
    assert from_objects[1].area_um2 == pytest.approx((labels == 2).sum() * 0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_background_level_of_integer_frames_is_the_sorted_one(seed: int, dtype: type) -> None:
    """8/16-bit frames take the histogram path: the same numbers as np.median's sorts,
    whether the count of background pixels is even or odd and the median a half."""
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max
    for size in (63, 64, 255, 256):  # up to 256²: every pixel read, no subsampling
        image = rng.normal(high * 0.4, high * 0.05, (size, size)).clip(0, high).astype(dtype)
        labels = disks((size, size), [(size // 3, size // 2, size // 6)])
        values = image[labels == 0].astype(np.float32)
        median = float(np.median(values))
        spread = max(1.4826 * float(np.median(np.abs(values - median))), 1.0)
        kept = values[np.abs(values - median) <= 4.0 * spread]
        level = background_level(labels, image)
        assert level == {
            "background_mean": float(kept.mean()),
            "background_noise": float(kept.std()),
        }
