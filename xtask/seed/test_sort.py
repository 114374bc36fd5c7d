"""Unit tests of the tracker and the accuracy computation (pure Python:
`python3 -m unittest discover xtask/seed`, run by xtask's tests)."""

import unittest

from metrics import Accuracy, match, percentile
from sort import Kalman1D, Sort, Track, iou


class IoU(unittest.TestCase):
    def test_overlaps(self):
        self.assertEqual(iou((0, 0, 10, 10), (0, 0, 10, 10)), 1.0)
        self.assertEqual(iou((0, 0, 10, 10), (10, 0, 10, 10)), 0.0)
        self.assertAlmostEqual(iou((0, 0, 10, 10), (5, 0, 10, 10)), 50 / 150)
        self.assertEqual(iou((0, 0, 0, 0), (0, 0, 0, 0)), 0.0)


class Kalman(unittest.TestCase):
    def test_learns_a_constant_velocity(self):
        k = Kalman1D(0.0)
        for t in range(1, 30):
            k.predict()
            k.update(5.0 * t)
        self.assertAlmostEqual(k.v, 5.0, delta=0.2)
        self.assertAlmostEqual(k.predict(), 150.0, delta=1.0)

    def test_a_noisy_measurement_is_smoothed(self):
        k = Kalman1D(100.0)
        for _ in range(20):
            k.predict()
            k.update(100.0)
        k.predict()
        k.update(130.0)
        self.assertLess(k.p, 130.0)
        self.assertGreater(k.p, 100.0)


class Tracker(unittest.TestCase):
    def test_moving_objects_keep_their_ids(self):
        s = Sort()
        ids = None
        for t in range(20):
            boxes = [(10 + 12 * t, 50, 100, 30), (900 - 15 * t, 400 + 2 * t, 100, 30)]
            got = [tr.id for tr in s.update(boxes)]
            if ids is None:
                ids = got
            self.assertEqual(got, ids, f"frame {t}")
        self.assertEqual(len(set(ids)), 2)

    def test_a_missed_frame_is_bridged_and_a_long_gap_is_not(self):
        s = Sort(max_age=2)
        first = s.update([(0, 0, 100, 30)])[0].id
        s.update([])
        self.assertEqual(s.update([(0, 0, 100, 30)])[0].id, first)
        for _ in range(4):
            s.update([])
        self.assertNotEqual(s.update([(0, 0, 100, 30)])[0].id, first)

    def test_a_far_detection_starts_a_new_track(self):
        s = Sort()
        a = s.update([(0, 0, 100, 30)])[0].id
        b = s.update([(1000, 1000, 100, 30)])[0].id
        self.assertNotEqual(a, b)

    def test_readings_are_voted_by_confidence(self):
        t = Track(1, (0, 0, 10, 10))
        self.assertEqual(t.text(), "")
        t.read("A123BC", 0.9)
        t.read("A12BC", 0.5)
        t.read("A12BC", 0.3)
        t.read("A123BC", 0.2)
        self.assertEqual(t.text(), "A123BC")
        t.read("", 5.0)
        self.assertEqual(t.text(), "A123BC")


class Metrics(unittest.TestCase):
    def test_match_is_one_to_one_by_best_iou(self):
        truth = [(0, 0, 10, 10), (100, 100, 10, 10)]
        boxes = [(1, 0, 10, 10), (0, 1, 10, 10), (500, 500, 5, 5)]
        self.assertEqual(match(truth, boxes), [(0, 0)])
        self.assertEqual(match(truth, []), [])

    def test_accuracy_counts_reads_misses_switches_and_false_positives(self):
        acc = Accuracy()
        box1, box2 = (0, 0, 100, 30), (500, 500, 100, 30)
        truth = [(1, "A123BC", box1), (2, "K777OT", box2)]
        # Frame 1: plate 1 read right, plate 2 missed, one false positive.
        acc.add_frame(truth, [(7, box1, "A123BC"), (8, (900, 900, 50, 20), "X")])
        # Frame 2: both found, plate 2 misread; plate 1 changes track id.
        acc.add_frame(truth, [(9, box1, "A123BC"), (10, box2, "K777O")])
        s = acc.summary()
        self.assertEqual(s["plates"], 4)
        self.assertEqual(s["recall"], 0.75)
        self.assertEqual(s["read_accuracy"], 0.5)
        self.assertEqual(s["id_switches"], 1)
        self.assertEqual(s["false_positives"], 1)

    def test_percentile_is_nearest_rank(self):
        v = list(range(100, 0, -1))
        self.assertEqual(percentile(v, 0.99), 99)
        self.assertEqual(percentile(v, 0.5), 50)
        self.assertEqual(percentile([7], 0.99), 7)
        with self.assertRaises(ValueError):
            percentile([], 0.5)


if __name__ == "__main__":
    unittest.main()
