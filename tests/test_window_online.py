"""The online ring buffer yields exactly the windows of `sliding_windows`, and restarts after a reset."""

from __future__ import annotations

import numpy as np
import pytest

from edgevae.core.window import OnlineWindow, sliding_windows, window_count, window_end_rows


@pytest.mark.parametrize(
    ("rows", "window", "stride"),
    [
        (50, 8, 4),  # the usual overlap
        (50, 8, 1),  # a window per reading
        (50, 8, 8),  # no overlap
        (50, 5, 3),  # stride not dividing the window
        (7, 8, 4),  # shorter than a window: nothing is due
        (8, 8, 4),  # exactly one window
        (33, 2, 2),  # the smallest window a manifest allows
    ],
)
def test_online_windows_equal_sliding_windows(rows: int, window: int, stride: int) -> None:
    values = np.random.default_rng(rows).normal(size=(rows, 3)).astype(np.float32)
    ts = np.arange(rows, dtype=np.float64) * 0.5
    online = OnlineWindow(window, stride, channels=3)
    got, ends, spans = [], [], []
    for i in range(rows):
        if online.push(float(ts[i]), values[i]):
            got.append(online.window())
            ends.append(i)
            spans.append(online.span())
    expected = sliding_windows(values, window, stride)
    assert len(got) == len(expected) == window_count(rows, window, stride)
    if got:
        np.testing.assert_array_equal(np.stack(got), expected)
    assert ends == window_end_rows(rows, window, stride).tolist()
    assert spans == [(float(ts[e - window + 1]), float(ts[e])) for e in ends]


@pytest.mark.parametrize(
    ("rows", "window", "stride", "count"),
    [
        (0, 4, 1, 0),  # no rows
        (3, 4, 1, 0),  # one row short of a window
        (4, 4, 1, 1),  # exactly one window
        (4, 4, 3, 1),  # a stride longer than what is left adds nothing
        (10, 4, 1, 7),  # a window per row after the first full one
        (10, 4, 3, 3),  # rows 0-3, 3-6, 6-9
        (11, 4, 3, 3),  # a leftover row short of the next stride
        (12, 4, 4, 3),  # no overlap
    ],
)
def test_window_count(rows: int, window: int, stride: int, count: int) -> None:
    assert window_count(rows, window, stride) == count
    assert len(sliding_windows(np.zeros((rows, 1)), window, stride)) == count


def test_window_is_a_copy() -> None:
    online = OnlineWindow(window=2, stride=1, channels=1)
    online.push(0.0, np.array([1.0]))
    online.push(1.0, np.array([2.0]))
    first = online.window()
    online.push(2.0, np.array([3.0]))
    assert first[:, 0].tolist() == [1.0, 2.0]


def test_reset_starts_a_fresh_window() -> None:
    online = OnlineWindow(window=3, stride=1, channels=1)
    due = [online.push(float(t), np.array([t])) for t in range(4)]
    assert due == [False, False, True, True]
    online.reset()
    assert online.last_ts is None
    due = [online.push(float(t), np.array([t])) for t in range(10, 14)]
    assert due == [False, False, True, True]  # readings before the reset never join a window
    assert online.window()[:, 0].tolist() == [11.0, 12.0, 13.0]


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("stride", [1, 2, 5])
@pytest.mark.parametrize("blocks", [[1], [2, 7, 1, 30, 4], [40], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]])
def test_a_block_pushes_as_its_readings_one_by_one(window: int, stride: int, blocks: list[int]) -> None:
    rng = np.random.default_rng(window * 100 + stride)
    rows = rng.normal(size=(sum(blocks), 2))
    one, many = OnlineWindow(window, stride, 2), OnlineWindow(window, stride, 2)
    want = []
    for i, row in enumerate(rows):
        if one.push(float(i), row):
            want.append((one.window(), one.span(), i))
    got, start = [], 0
    for n in blocks:
        block = many.push_block(np.arange(start, start + n, dtype=np.float64), rows[start : start + n])
        spans = zip(block.start_ts.tolist(), block.end_ts.tolist(), strict=True)
        got += [(w, span, start + int(k)) for w, span, k in zip(block.windows, spans, block.ends, strict=True)]
        assert many.window().tolist() == _replayed(rows[: start + n], window, stride).window().tolist()
        start += n
    assert [(w.tolist(), s, i) for w, s, i in want] == [(w.tolist(), s, i) for w, s, i in got]
    assert many.count == one.count
    assert many.last_ts == one.last_ts
    assert many.push(float(start), rows[0]) == one.push(float(start), rows[0])


def _replayed(rows: np.ndarray, window: int, stride: int) -> OnlineWindow:
    w = OnlineWindow(window, stride, rows.shape[1])
    for i, row in enumerate(rows):
        w.push(float(i), row)
    return w
