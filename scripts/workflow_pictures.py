"""Screenshots of the example workflows in ComfyUI's own frontend: template thumbnails and README pictures.

Needs a running ComfyUI with this pack (on 127.0.0.1) and a Chromium; run it with a Python that has aiohttp
and Pillow (ComfyUI's own venv has both)::

    cd $COMFYUI_DIR && python main.py --cpu --listen 127.0.0.1 --port 8199 --disable-auto-launch \\
        --base-directory /tmp/lamp_base --disable-all-custom-nodes --whitelist-custom-nodes ComfyUI-LAMP &
    # (with /tmp/lamp_base/custom_nodes/ComfyUI-LAMP -> this checkout, /tmp/lamp_base/input/example.png)
    $COMFYUI_DIR/../venv/bin/python scripts/workflow_pictures.py --url http://127.0.0.1:8199 lamp_train [...]

For each name it loads ``workflows/<name>.json`` into the page (``app.loadGraphData``), fits the whole graph
into the canvas with the menus hidden, and writes ``workflows/<name>.jpg`` (640 px wide, the template
thumbnail ComfyUI serves next to the template) and, with ``--docs``, ``docs/img/<name>.png`` (full size).
Chromium is driven over its DevTools protocol; nothing is downloaded and everything stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THUMB_WIDTH = 640
#: DOM around the graph canvas that a workflow picture should not show.
HIDE_CSS = (".comfyui-body-top, .comfyui-body-left, .comfyui-body-right, .comfyui-body-bottom, .comfy-menu, "
            ".side-tool-bar-container, .graph-canvas-menu, .workflow-tabs-container, .actionbar, .comfyui-menu, "
            ".bottom-panel, .selection-toolbox, .p-toast { display: none !important; }")
FIT_JS = """(() => {
  document.querySelectorAll('.p-dialog-mask, .p-toast').forEach(e => e.remove());
  const style = document.getElementById('lamp-shot') || Object.assign(document.createElement('style'), {id: 'lamp-shot'});
  style.textContent = %s; document.head.appendChild(style);
  const g = app.graph; let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
  for (const n of g._nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
  for (const gr of (g._groups || [])) { const b = gr._bounding || gr.bounding; x0 = Math.min(x0, b[0]);
    y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]); }
  const c = app.canvas, W = c.canvas.width, H = c.canvas.height, m = 20;
  const scale = Math.min((W - 2 * m) / (x1 - x0), (H - 2 * m) / (y1 - y0));
  c.ds.scale = scale; c.ds.offset = [m / scale - x0, m / scale - y0]; c.setDirty(true, true);
  return [Math.min(W, (x1 - x0) * scale + 2 * m), Math.min(H, (y1 - y0) * scale + 2 * m)]; })()"""


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0
        self.errors: list[str] = []  # the page's console errors and uncaught exceptions, as they arrive

    def note(self, msg: dict) -> None:
        """Keeps the page's errors from the DevTools events that arrive between command replies."""
        params = msg.get("params", {})
        if msg.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        elif msg.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif msg.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())

    async def cmd(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            self.note(msg)
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str):
        result = await self.cmd("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"])[:500])
        return result["result"].get("value")


async def shoot(url: str, names: list[str], docs: bool, chromium: str, port: int = 9229) -> None:
    import aiohttp
    from PIL import Image

    for key, value in (("Comfy.Minimap.Visible", False), ("Comfy.TutorialCompleted", True)):
        urllib.request.urlopen(urllib.request.Request(f"{url}/settings/{key}", json.dumps(value).encode(), method="POST"))
    profile = tempfile.mkdtemp(prefix="lamp-chromium-")
    browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                f"--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
                                "--window-size=1920,1080", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                ws_url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                time.sleep(0.5)
        else:
            raise RuntimeError("Chromium did not start")
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                await page.cmd(f"{domain}.enable")
            await page.cmd("Emulation.setDeviceMetricsOverride", width=1920, height=1080, deviceScaleFactor=1,
                           mobile=False)
            await page.cmd("Page.navigate", url=url + "/")
            for _ in range(180):
                await asyncio.sleep(1)
                try:
                    if await page.js("!!(window.app && window.app.graph && window.app.canvas)"):
                        break
                except RuntimeError:
                    pass
            await asyncio.sleep(3)  # extensions finish registering
            registered = await page.js("app.extensions.some(e => e.name === 'ComfyUI-LAMP.messages')")
            print(f"web/lamp_messages.js registered: {registered}", flush=True)
            for name in names:
                workflow = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
                await page.js(f"app.loadGraphData({json.dumps(workflow)})")
                await asyncio.sleep(2)
                # fit twice: the first call hides the menus, which resizes the canvas; the second fits that size
                for _ in range(2):
                    width, height = await page.js(FIT_JS % json.dumps(HIDE_CSS))
                    await asyncio.sleep(2)
                shot = await page.cmd("Page.captureScreenshot", format="png",
                                      clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
                image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
                if docs:
                    image.save(ROOT / "docs" / "img" / f"{name}.png", optimize=True)
                thumb = image.resize((THUMB_WIDTH, round(image.height * THUMB_WIDTH / image.width)), Image.LANCZOS)
                thumb.save(ROOT / "workflows" / f"{name}.jpg", quality=85, optimize=True)
                print(f"{name}: {image.width}x{image.height} -> workflows/{name}.jpg", flush=True)
            for error in page.errors:
                print(f"page error: {error[:300]}", flush=True)
            print(f"{len(page.errors)} page error(s)", flush=True)
    finally:
        browser.terminate()
        browser.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="workflow names (workflows/<name>.json)")
    ap.add_argument("--url", default="http://127.0.0.1:8188", help="the running ComfyUI (127.0.0.1 only)")
    ap.add_argument("--docs", action="store_true", help="also write docs/img/<name>.png (full size)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--devtools-port", type=int, default=9229, help="Chromium's DevTools port (127.0.0.1)")
    args = ap.parse_args()
    asyncio.run(shoot(args.url, args.names, args.docs, args.chromium, args.devtools_port))


if __name__ == "__main__":
    main()
