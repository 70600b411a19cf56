"""What the ComfyUI frontend shows: room for the sampler's live preview, a thumbnail per shipped template, a
readable loss plot, and the web extension that puts node warnings on the node."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
sys.path.insert(0, str(WORKFLOWS))
import make_workflows  # noqa: E402

VIDEO_WORKFLOWS = ["lamp_sdxl_text_to_video.json", "lamp_image_to_video.json",
                   "lamp_sdxl_controlnet_edit_to_video.json"]


def _box(node):
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y, x + w, y + h


SAMPLER_WORKFLOWS = sorted(p.name for p in WORKFLOWS.glob("*.json") if '"LAMP_Sampler"' in p.read_text())


@pytest.mark.parametrize("name", SAMPLER_WORKFLOWS)
def test_sampler_preview_has_room(name):
    """The sampler is placed as tall as it grows with its preview, and no node lies under that box."""
    nodes = json.loads((WORKFLOWS / name).read_text())["nodes"]
    sampler = next(n for n in nodes if n["type"] == "LAMP_Sampler")
    assert sampler["size"][1] >= make_workflows.SAMPLER_HEIGHT
    x0, y0, x1, y1 = _box(sampler)
    for node in nodes:
        if node is sampler:
            continue
        a0, b0, a1, b1 = _box(node)
        assert a1 <= x0 or a0 >= x1 or b1 <= y0 or b0 >= y1, f"{node['type']} lies under the sampler's preview"


#: LiteGraph's node title bar (drawn above ``pos``), the frontend's "LAMP" source badge above a LAMP node's
#: title (measured in the screenshots: 3-21 px above it) and a group's title strip (24 px font), in graph units.
TITLE_HEIGHT, BADGE_HEIGHT, GROUP_TITLE_HEIGHT = 30, 22, 34
ALL_WORKFLOWS = sorted(p.name for p in WORKFLOWS.glob("*.json"))


@pytest.mark.parametrize("name", ALL_WORKFLOWS)
def test_nodes_do_not_overlap_and_group_titles_are_clear(name):
    """No node (title bar and LAMP badge included) lies on another, and no title bar on a group's title: the
    screenshots stay readable. (The badge sits at the title's right end, beside a group title's text.)"""
    wf = json.loads((WORKFLOWS / name).read_text())

    def box(n, badge):
        return n["pos"][0], n["pos"][1] - TITLE_HEIGHT - badge * BADGE_HEIGHT * n["type"].startswith("LAMP_"), *_box(n)[2:]

    def apart(p, q):
        return p[2] <= q[0] or p[0] >= q[2] or p[3] <= q[1] or p[1] >= q[3]

    nodes = wf["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert apart(box(a, True), box(b, True)), f"{a.get('title', a['type'])} overlaps {b.get('title', b['type'])}"
        for g in wf["groups"]:
            x, y, w, _ = g["bounding"]
            assert apart(box(a, False), (x, y, x + w, y + GROUP_TITLE_HEIGHT)), f"{a['type']} on {g['title']}"


#: What web/lamp_messages.js writes under a node: the first line 16 px below it, then 15 px per line (12 px font);
#: four lines hold LAMP First Frame's batch warning at the node's 320 px width.
MESSAGE_ROOM = 16 + 3 * 15 + 4


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json") if '"LAMP_FirstFrame"' in p.read_text()))
def test_first_frame_warning_has_room(name):
    """No node (nor its LAMP badge) covers the lines LAMP First Frame's warning is drawn on."""
    nodes = json.loads((WORKFLOWS / name).read_text())["nodes"]
    first = next(n for n in nodes if n["type"] == "LAMP_FirstFrame")
    x0, _, x1, y0 = _box(first)
    for node in nodes:
        a0, b0, a1, b1 = _box(node)
        b0 -= TITLE_HEIGHT + BADGE_HEIGHT * node["type"].startswith("LAMP_")
        assert a1 <= x0 or a0 >= x1 or b1 <= y0 or b0 >= y0 + MESSAGE_ROOM, f"{node['type']} covers the warning"


@pytest.mark.parametrize("name", ALL_WORKFLOWS)
def test_template_has_a_thumbnail(name):
    from PIL import Image

    thumb = WORKFLOWS / name.replace(".json", ".jpg")
    with Image.open(thumb) as img:
        assert img.format == "JPEG" and img.width == 640 and 150 <= img.height <= 400
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # a picture of the graph, not a flat box


def _ink_rows(img, box):
    """Rows of ``box`` that hold dark (text) pixels."""
    gray = np.asarray(img.convert("L").crop(box))
    rows = np.where((gray < 128).any(axis=1))[0]
    return rows.max() - rows.min() + 1 if rows.size else 0


@pytest.mark.parametrize("height", [360, 720])
def test_loss_plot_text_is_readable_and_scales(height):
    from lamp_model.train import loss_plot

    img = loss_plot([1.0 / (1 + i) for i in range(50)], size=(height * 16 // 9, height), title="LAMP horse run")
    title_px = _ink_rows(img, (0, 0, img.width, round(height / 24 * 2.4)))
    assert title_px >= height / 36, title_px  # >= 10 px at 360 px: readable; twice that at 720
    # the title's words are separated: a blank column run between "LAMP" and "horse"
    gray = np.asarray(img.convert("L").crop((0, 0, img.width // 2, round(height / 24 * 2.4))))
    inked = (gray < 128).any(axis=0)
    first, last = np.argmax(inked), len(inked) - np.argmax(inked[::-1])
    gaps = np.diff(np.flatnonzero(np.diff(inked[first:last].astype(int)) != 0))
    assert gaps.size and gaps.max() >= height / 90


def test_web_extension_reads_the_key_the_nodes_send():
    """host.node_result's ui key is the one web/lamp_messages.js displays, and ComfyUI is told to serve web/."""
    from nodes import host

    key = next(iter(host.node_result((1,), ["w"])["ui"]))
    assert 'WEB_DIRECTORY = "./web"' in (ROOT / "__init__.py").read_text()
    assert f"output?.{key}" in (ROOT / "web" / "lamp_messages.js").read_text()
