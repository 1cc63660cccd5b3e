"""Decision logic: coordinates, overlap merging, rules, travel order. Pure functions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tasks.decisions import (
    Detection,
    FrameGeometry,
    SelectionRules,
    detections_from_labels,
    merge_overlapping,
    order_for_short_travel,
    path_length_um,
    select_targets,
    tile_grid,
)


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
def test_pixel_to_stage_follows_the_camera_affine(flip_x: bool, flip_y: bool) -> None:
    px = 0.65
    affine = ((-px if flip_x else px), 0.0, 0.0, 0.0, (-px if flip_y else px), 0.0)
    g = FrameGeometry(1000.0, 2000.0, 512, 256, affine)
    x, y = g.to_stage(np.array([127.5]), np.array([255.5]))  # the image centre
    assert (x[0], y[0]) == pytest.approx((1000.0, 2000.0))
    x, y = g.to_stage(np.array([127.5]), np.array([255.5 + 100]))  # 100 px to the right
    assert x[0] == pytest.approx(1000.0 + (-65.0 if flip_x else 65.0))
    rows, cols = g.to_pixel(*g.to_stage(np.array([3.0, 200.0]), np.array([7.0, 500.0])))
    np.testing.assert_allclose(rows, [3.0, 200.0])
    np.testing.assert_allclose(cols, [7.0, 500.0])


def test_a_rotated_camera_maps_columns_to_stage_y() -> None:
    g = FrameGeometry(0.0, 0.0, 100, 100, (0.0, -1.0, 0.0, 1.0, 0.0, 0.0))  # 90 degrees
    x, y = g.to_stage(np.array([49.5]), np.array([59.5]))
    assert (x[0], y[0]) == pytest.approx((0.0, 10.0))
    assert g.pixel_size_um == pytest.approx(1.0)


def test_tiles_cover_the_region_with_the_requested_overlap() -> None:
    region = (0.0, 0.0, 3000.0, 2000.0)
    tiles = tile_grid(region, (1000.0, 1000.0), overlap=0.1)
    xs = sorted({round(x, 6) for x, _ in tiles})
    ys = sorted({round(y, 6) for _, y in tiles})
    assert xs[0] == 500 and xs[-1] == 2500 and ys[0] == 500 and ys[-1] == 1500
    assert max(np.diff(xs)) <= 900 + 1e-9  # at least 10 % overlap
    assert len(tiles) == len(xs) * len(ys)
    assert tiles[len(xs) - 1][0] == tiles[len(xs)][0]  # serpentine: next row starts where it ended
    with pytest.raises(ValueError, match="empty"):
        tile_grid((0, 0, 0, 10), (1, 1), 0.1)


def test_detections_land_where_the_objects_are() -> None:
    labels = np.zeros((100, 100), np.int32)
    labels[10:20, 30:40] = 1  # centre (14.5, 34.5)
    labels[0:5, 90:100] = 2  # touches the border
    image = np.where(labels > 0, 500.0, 100.0)
    g = FrameGeometry.simple(1000.0, 1000.0, 100, 100, 0.5)
    found = detections_from_labels(labels, image, g, tile=3)
    assert len(found) == 2
    a, b = found
    assert (a.x_um, a.y_um) == pytest.approx(
        (1000 + (34.5 - 49.5) * 0.5, 1000 + (14.5 - 49.5) * 0.5)
    )
    assert a.area_um2 == pytest.approx(100 * 0.25) and a.score == pytest.approx(500.0)
    assert not a.touches_border and b.touches_border and a.tile == 3


def _det(x: float, y: float, r: float = 5.0, border: bool = False, score: float = 1.0) -> Detection:
    return Detection(x, y, np.pi * r * r, r, score, 0, border)


def test_an_object_seen_in_two_overlapping_tiles_is_kept_once_whole() -> None:
    cut = _det(100.0, 100.0, r=4.0, border=True)
    whole = _det(101.0, 100.5, r=6.0)
    other = _det(140.0, 100.0)
    merged = merge_overlapping([cut, other, whole])
    assert whole in merged and other in merged and cut not in merged
    assert len(merged) == 2


def test_rules_filter_by_size_and_score_and_cap_the_count() -> None:
    dets = [
        _det(0, i * 20, r=r, score=s)
        for i, (r, s) in enumerate([(1, 9), (5, 3), (5, 7), (30, 8), (6, 5)])
    ]
    rules = SelectionRules(min_area_um2=20, max_area_um2=500, max_targets=2)
    chosen = select_targets(dets, rules)
    assert [d.score for d in chosen] == [7, 5]


def test_travel_order_is_short() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1000, (7, 2))
    order = order_for_short_travel(pts, start=(0.0, 0.0))
    assert sorted(order) == list(range(7))
    best = min(path_length_um(pts[list(p)], (0.0, 0.0)) for p in itertools.permutations(range(7)))
    assert path_length_um(pts[order], (0.0, 0.0)) <= 1.1 * best
    random_order = path_length_um(pts, (0.0, 0.0))
    assert path_length_um(pts[order], (0.0, 0.0)) < random_order


def test_travel_order_scales_to_hundreds_of_targets() -> None:
    pts = np.random.default_rng(2).uniform(0, 5000, (300, 2))
    order = order_for_short_travel(pts)
    assert sorted(order) == list(range(300))
    assert path_length_um(pts[order]) < 0.3 * path_length_um(pts)
