"""A small SORT tracker (Bewley et al., 2016, simplified), pure Python.

Each track keeps one constant-velocity Kalman filter per box coordinate
(centre x, centre y, width, height; state: value and its velocity per
frame). Every frame the tracks are predicted, detections are associated to
them greedily by descending IoU (at least `iou_threshold`), matched tracks
are corrected, unmatched detections start new tracks and tracks missed for
more than `max_age` frames are dropped. A track also collects the
recogniser's readings and answers the reading with the highest summed
confidence (a vote over the frames it was seen in).
"""


def iou(a, b):
    """Intersection over union of two boxes (x, y, w, h)."""
    ax2, ay2 = a[0] + a[2], a[1] + a[3]
    bx2, by2 = b[0] + b[2], b[1] + b[3]
    iw = min(ax2, bx2) - max(a[0], b[0])
    ih = min(ay2, by2) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class Kalman1D:
    """Constant-velocity Kalman filter of one coordinate: state (p, v)."""

    def __init__(self, p, q=1.0, r=10.0, v_var=1000.0):
        self.p, self.v = float(p), 0.0
        # Covariance [[a, b], [b, c]]: the velocity starts unknown.
        self.a, self.b, self.c = r, 0.0, v_var
        self.q, self.r = q, r

    def predict(self):
        """x = F x, P = F P F' + Q with F = [[1, 1], [0, 1]], Q = q I."""
        self.p += self.v
        a, b, c = self.a, self.b, self.c
        self.a = a + 2 * b + c + self.q
        self.b = b + c
        self.c = c + self.q
        return self.p

    def update(self, z):
        """Corrects with a measurement z of the position (H = [1, 0])."""
        s = self.a + self.r
        k0, k1 = self.a / s, self.b / s
        y = z - self.p
        self.p += k0 * y
        self.v += k1 * y
        a, b, c = self.a, self.b, self.c
        self.a = (1 - k0) * a
        self.b = (1 - k0) * b
        self.c = c - k1 * b


class Track:
    """One tracked object."""

    def __init__(self, track_id, box):
        x, y, w, h = box
        self.id = track_id
        self.kf = [Kalman1D(x + w / 2), Kalman1D(y + h / 2), Kalman1D(w), Kalman1D(h)]
        self.hits = 1
        self.misses = 0
        self.votes = {}

    def predict(self):
        for f in self.kf:
            f.predict()

    def update(self, box):
        x, y, w, h = box
        for f, z in zip(self.kf, (x + w / 2, y + h / 2, w, h)):
            f.update(z)
        self.hits += 1
        self.misses = 0

    def box(self):
        cx, cy, w, h = (f.p for f in self.kf)
        w, h = max(w, 1.0), max(h, 1.0)
        return (cx - w / 2, cy - h / 2, w, h)

    def read(self, text, confidence):
        """Adds one reading of the object's text."""
        if text:
            self.votes[text] = self.votes.get(text, 0.0) + confidence

    def text(self):
        """The reading with the highest summed confidence ('' if none)."""
        if not self.votes:
            return ""
        return max(sorted(self.votes), key=lambda t: self.votes[t])


class Sort:
    """The tracker: `update(boxes)` once per frame."""

    def __init__(self, iou_threshold=0.3, max_age=3):
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self.tracks = []
        self.next_id = 1

    def update(self, boxes):
        """Associates this frame's detections (x, y, w, h); returns one track
        per detection, in the detections' order."""
        for t in self.tracks:
            t.predict()
        pairs = []
        for ti, t in enumerate(self.tracks):
            tb = t.box()
            for di, d in enumerate(boxes):
                v = iou(tb, d)
                if v >= self.iou_threshold:
                    pairs.append((-v, ti, di))
        pairs.sort()
        used_t, assigned = set(), {}
        for _, ti, di in pairs:
            if ti in used_t or di in assigned:
                continue
            used_t.add(ti)
            assigned[di] = self.tracks[ti]
            self.tracks[ti].update(boxes[di])
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t.misses += 1
        out = []
        for di, d in enumerate(boxes):
            t = assigned.get(di)
            if t is None:
                t = Track(self.next_id, d)
                self.next_id += 1
                self.tracks.append(t)
            out.append(t)
        self.tracks = [t for t in self.tracks if t.misses <= self.max_age]
        return out
