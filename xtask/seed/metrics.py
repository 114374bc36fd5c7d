"""Accuracy of the plate pipeline against the ground truth drawn into the
frames, and latency percentiles."""

from sort import iou


def match(truth_boxes, boxes, threshold=0.3):
    """Greedy one-to-one matching by descending IoU (at least `threshold`):
    a list of (truth index, box index)."""
    pairs = sorted(
        (-iou(t, b), ti, bi)
        for ti, t in enumerate(truth_boxes)
        for bi, b in enumerate(boxes)
        if iou(t, b) >= threshold
    )
    used_t, used_b, out = set(), set(), []
    for _, ti, bi in pairs:
        if ti in used_t or bi in used_b:
            continue
        used_t.add(ti)
        used_b.add(bi)
        out.append((ti, bi))
    return sorted(out)


class Accuracy:
    """Counts over frames: each truth plate seen (detected: matched by a
    track's box), read (its track's reading equals the truth), and the
    track id switches of each plate."""

    def __init__(self, threshold=0.3):
        self.threshold = threshold
        self.plates = 0
        self.detected = 0
        self.read = 0
        self.switches = 0
        self.false_positives = 0
        self.last_track = {}

    def add_frame(self, truth, tracks):
        """`truth`: [(plate id, text, box)]; `tracks`: [(track id, box,
        text)] reported for the frame."""
        pairs = match([t[2] for t in truth], [t[1] for t in tracks], self.threshold)
        self.plates += len(truth)
        self.detected += len(pairs)
        self.false_positives += len(tracks) - len(pairs)
        for ti, bi in pairs:
            plate_id, text, _ = truth[ti]
            track_id, _, reading = tracks[bi]
            if reading == text:
                self.read += 1
            last = self.last_track.get(plate_id)
            if last is not None and last != track_id:
                self.switches += 1
            self.last_track[plate_id] = track_id

    def summary(self):
        """Recall and read accuracy (fractions of the truth plates), id
        switches and false positives."""
        n = max(self.plates, 1)
        return {
            "plates": self.plates,
            "recall": self.detected / n,
            "read_accuracy": self.read / n,
            "id_switches": self.switches,
            "false_positives": self.false_positives,
        }


def percentile(values, q):
    """Nearest-rank percentile (as the Rust side computes it)."""
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    import math

    rank = min(max(math.ceil(len(s) * q), 1), len(s))
    return s[rank - 1]
