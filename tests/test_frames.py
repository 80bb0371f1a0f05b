"""The frames a dashboard sends to the browser under ipympl: valid PNGs that rebuild the figure exactly.

Decoded with Pillow (an independent PNG decoder) and composited as ipympl's front end does: a "full" frame
replaces the image, a "diff" frame is drawn over it (its transparent pixels leave the old ones).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explainer.widgets import load_all
from explainer.widgets.frames import diff_frame, encode_png

DASHBOARDS = load_all()


def _decode(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGBA"
    return np.asarray(img)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (414, 684)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_encode_png_decodes_to_the_same_pixels(shape, level):
    rng = np.random.default_rng(sum(shape) + level)
    rgba = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
    rgba[: shape[0] // 2] = 0  # a diff frame is mostly zeros
    assert np.array_equal(_decode(encode_png(rgba, level)), rgba)


def test_encode_png_rejects_what_is_not_an_rgba_image():
    with pytest.raises(ValueError, match="rgba must be a uint8 array of shape"):
        encode_png(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="rgba must be a uint8 array"):
        encode_png(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="at least one pixel"):
        encode_png(np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="level must be"):
        encode_png(np.zeros((2, 2, 4), np.uint8), level=10)


@pytest.fixture
def ipympl_backend():
    import matplotlib.pyplot as plt

    before = plt.get_backend()
    plt.switch_backend("module://ipympl.backend_nbagg")
    yield
    plt.close("all")
    plt.switch_backend(before)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_frames_rebuild_the_figure_and_send_only_changes(name, ipympl_backend):
    dash = DASHBOARDS[name]()
    canvas = dash.fig.canvas
    assert canvas.get_diff_image.__func__ is diff_frame, "the dashboard's canvas sends its frames through frames.py"
    sent = []
    canvas.send_binary = sent.append  # what would go to the browser
    canvas.syncing_data_url = False   # as once a browser shows the figure: every update draws and sends
    canvas.draw()
    assert canvas._current_image_mode == "full"
    screen = _decode(sent[-1]).copy()
    for state in dash.bench_states()[:4]:
        n = len(sent)
        dash.update(**state)
        assert len(sent) == n + 1, "one update sends one frame, without a round trip through the browser"
        assert canvas._current_image_mode == "diff", "after the first frame, only the changed pixels are sent"
        frame = _decode(sent[-1])
        changed = frame[:, :, 3] != 0
        screen[changed] = frame[changed]
        drawn = np.asarray(canvas.get_renderer().buffer_rgba())
        assert (drawn[:, :, 3] == 255).all(), "the figure is opaque (a transparent row forces full frames)"
        assert np.array_equal(screen, drawn), f"{state}: the browser's image differs from the figure"
    dash.close()
