"""The 32 -> 16 class mapping and the segmentation metric against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.data.classes import LIDARSEG_CLASSES, SEGMENTATION_CLASSES, segmentation_lut
from pipeline.errors import RowError
from pipeline.train import seg_metrics
from pipeline.data.splits import label_fraction_step
from pipeline.train.seg_data import load_labels

# The nuScenes-lidarseg benchmark's mapping (general class -> evaluation class), written out.
EXPECTED = {
    "noise": "ignore", "animal": "ignore",
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian", "human.pedestrian.personal_mobility": "ignore",
    "human.pedestrian.police_officer": "pedestrian", "human.pedestrian.stroller": "ignore",
    "human.pedestrian.wheelchair": "ignore", "movable_object.barrier": "barrier",
    "movable_object.debris": "ignore", "movable_object.pushable_pullable": "ignore",
    "movable_object.trafficcone": "traffic_cone", "static_object.bicycle_rack": "ignore",
    "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus", "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle", "vehicle.emergency.ambulance": "ignore",
    "vehicle.emergency.police": "ignore", "vehicle.motorcycle": "motorcycle", "vehicle.trailer": "trailer",
    "vehicle.truck": "truck", "flat.driveable_surface": "driveable_surface", "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk", "flat.terrain": "terrain", "static.manmade": "manmade",
    "static.other": "ignore", "static.vegetation": "vegetation", "vehicle.ego": "ignore",
}


def test_class_mapping_32_to_16():
    lut = segmentation_lut()
    assert len(lut) == 32 and set(EXPECTED) == set(LIDARSEG_CLASSES)
    for i, name in enumerate(LIDARSEG_CLASSES):
        assert SEGMENTATION_CLASSES[lut[i]] == EXPECTED[name], name
    assert sorted(set(lut.tolist())) == list(range(17))  # every evaluation class is reachable


def test_labels_file_is_mapped_and_checked(tmp_path):
    raw = np.array([17, 24, 0, 31, 9, 2], dtype=np.uint8)  # car, driveable, noise, ego, barrier, adult
    path = tmp_path / "x_lidarseg.bin"
    raw.tofile(path)
    assert load_labels(path, 6, "tok").tolist() == [4, 11, 0, 0, 1, 7]
    with pytest.raises(RowError, match="sample tok: .* 6 labels for 7 points"):
        load_labels(path, 7, "tok")
    np.array([40], dtype=np.uint8).tofile(path)
    with pytest.raises(RowError, match="class index 40"):
        load_labels(path, 1, "tok")


def test_label_fraction_scene_steps():
    assert [label_fraction_step(f) for f in (0.01, 0.05, 0.1, 0.25, 1.0)] == [100, 20, 10, 4, 1]


def test_confusion_iou_and_miou_by_hand():
    # classes 1 (barrier), 2 (bicycle), 4 (car); label 0 is ignored whatever is predicted
    labels = np.array([1, 1, 1, 2, 2, 4, 4, 4, 4, 0, 0])
    preds = np.array([1, 1, 2, 2, 4, 4, 4, 4, 1, 3, 4])
    m = seg_metrics.confusion(labels, preds)
    expected = np.zeros((16, 16), dtype=np.int64)
    for gt, pr, n in [(1, 1, 2), (1, 2, 1), (2, 2, 1), (2, 4, 1), (4, 4, 3), (4, 1, 1)]:
        expected[gt - 1, pr - 1] = n
    np.testing.assert_array_equal(m, expected)
    r = seg_metrics.report(m)
    # barrier: TP 2, FP 1 (a car), FN 1 -> 2/4; bicycle: TP 1, FP 1, FN 1 -> 1/3; car: TP 3, FP 1, FN 1 -> 3/5
    assert r["iou"]["barrier"] == pytest.approx(0.5)
    assert r["iou"]["bicycle"] == pytest.approx(1 / 3)
    assert r["iou"]["car"] == pytest.approx(0.6)
    assert r["iou"]["bus"] is None  # neither in the ground truth nor predicted (bus at an ignored point): not scored
    assert r["miou"] == pytest.approx((0.5 + 1 / 3 + 0.6) / 3)
    assert r["accuracy"] == pytest.approx(6 / 9) and r["points"] == 9
    assert r["classes_present"] == r["classes_scored"] == ["barrier", "bicycle", "car"]
    text = seg_metrics.table(r)
    assert "50.00" in text and "mIoU" in text and "47.78" in text


def test_predicting_an_absent_class_scores_it_zero_as_the_devkit_does():
    """The devkit's LidarSegEval: IoU = TP / (TP + FP + FN), NaN (not scored) only for 0 / 0, so a
    class predicted but absent from the ground truth counts with IoU 0."""
    labels = np.array([4, 4, 4, 4])
    r = seg_metrics.report(seg_metrics.confusion(labels, np.array([4, 4, 3, 3])))
    assert r["iou"]["car"] == pytest.approx(0.5) and r["iou"]["bus"] == 0.0
    assert r["miou"] == pytest.approx(0.25)
    assert r["classes_present"] == ["car"] and r["classes_scored"] == ["bus", "car"]
    assert math.isnan(seg_metrics.iou(np.zeros((16, 16), dtype=np.int64))[0])


def test_bad_predictions_are_refused():
    with pytest.raises(ValueError, match="predictions must be in 1..16"):
        seg_metrics.confusion(np.array([1, 2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="2 labels but 3"):
        seg_metrics.confusion(np.array([1, 2]), np.array([1, 2, 3]))
