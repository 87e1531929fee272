"""The training job's progress bar: tqdm with the rate (steps/s), and so the ETA, measured
over a sliding time window, so that the pauses for metrics and checkpoints every interval
do not swing the ETA from minutes to hours as tqdm's per-update moving average does."""
import collections
import time
from typing import Any, Deque, Optional, Tuple

RATE_WINDOW_S = 120.0


class WindowedRate:
    """Steps per second over the last `window_s` seconds of (time, step count) marks."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._marks: Deque[Tuple[float, float]] = collections.deque()

    def add(self, now: float, count: float) -> Optional[float]:
        """Record that `count` steps were done at time `now` (seconds); return the rate
        ``(count − count₀) / (now − t₀)`` from the oldest mark still within the window
        (None until time has passed), i.e. an average over whole metric pauses."""
        self._marks.append((now, count))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.window_s:
            self._marks.popleft()
        then, before = self._marks[0]
        return (count - before) / (now - then) if now > then and count > before else None


def progress_bar(total: int, initial: int, desc: str, window_s: float = RATE_WINDOW_S, **kwargs: Any):
    """A ``tqdm`` bar over `total` steps starting at `initial` whose rate and ETA come
    from a :class:`WindowedRate` (`kwargs` go to tqdm)."""
    from tqdm.auto import tqdm

    class WindowedTqdm(tqdm):
        @property
        def format_dict(self):
            values = super().format_dict
            if not hasattr(self, "_window"):  # format_dict is read inside tqdm's own __init__
                self._window = WindowedRate(window_s)
            rate = self._window.add(time.perf_counter(), self.n)
            if rate is not None:
                values["rate"] = rate
            return values

    return WindowedTqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, **kwargs)
