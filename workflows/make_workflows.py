"""Writes the example workflows of this folder (ComfyUI UI format, drag-and-drop into ComfyUI).

Run ``python workflows/make_workflows.py`` after changing a node's inputs; tests/test_workflows.py checks the
written files against the node definitions. Each node below states its sockets and widget values in the order
ComfyUI saves them (widgets in input order; an INT seed with "control after generate" adds one value).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))

SDXL_CKPT = "sd_xl_base_1.0.safetensors"
SD15_CKPT = "v1-5-pruned-emaonly.safetensors"
SDXL_CANNY = "control-lora-canny-rank256.safetensors"
MOTION = "horse_run.safetensors"
#: Height the LAMP Sampler is placed with: its widgets (~380 px) plus its live preview, a grid of up to 16 frames
#: (4×4 tiles of 512×320, 1.6:1, so ~200 px at the node's 320 px width). ComfyUI grows the node by the preview
#: when sampling starts; placed this tall, it covers nothing below it.
SAMPLER_HEIGHT = 640
#: LAMP Sampler's long-video widgets: long_strategy, segment_frames, overlap (-1 = the strategy's default),
#: content_lock, color_reference (the node's defaults).
LONG_DEFAULTS = ["segments", 16, -1, True, "frame one"]
#: LAMP First Frame's height: its widgets (the frontend's computed 150 px) and no more, because web/lamp_messages.js
#: writes the node's warning (4 lines at 12 px) under that box; LAMP Shared Noise is placed below those lines.
FIRST_FRAME_HEIGHT = 150


class Graph:
    """A minimal LiteGraph workflow: nodes with typed sockets and widget values, plus links between them."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def node(self, kind: str, pos: tuple[int, int], inputs: list[tuple[str, str]] = (),
             outputs: list[tuple[str, str]] = (), widgets: list[Any] = (), title: Optional[str] = None,
             size: tuple[int, int] = (320, 130)) -> dict[str, Any]:
        node = {
            "id": len(self.nodes) + 1, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
            "order": len(self.nodes), "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": kind},
            "widgets_values": list(widgets),
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, src: dict[str, Any], output: str, dst: dict[str, Any], input_name: str) -> None:
        slot = next(i for i, o in enumerate(src["outputs"]) if o["name"] == output)
        target = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == input_name)
        link_id = len(self.links) + 1
        kind = src["outputs"][slot]["type"]
        self.links.append([link_id, src["id"], slot, dst["id"], target, kind])
        src["outputs"][slot]["links"].append(link_id)
        dst["inputs"][target]["link"] = link_id

    def group(self, title: str, box: tuple[int, int, int, int], color: str) -> None:
        self.groups.append({"title": title, "bounding": list(box), "color": color, "font_size": 24, "flags": {}})

    def to_json(self) -> dict[str, Any]:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}}, "version": 0.4}


# ---------------------------------------------------------------------------------------------- core nodes
def checkpoint(g: Graph, pos, name: str, title: str) -> dict:
    return g.node("CheckpointLoaderSimple", pos, outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
                  widgets=[name], title=title, size=(340, 100))


def text(g: Graph, pos, clip: dict, prompt: str, title: str) -> dict:
    node = g.node("CLIPTextEncode", pos, inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")],
                  widgets=[prompt], title=title, size=(340, 120))
    g.link(clip, "CLIP", node, "clip")
    return node


def sdxl_frame_one(g: Graph, x: int, positive: tuple[dict, str], negative: tuple[dict, str], ckpt: dict,
                   size_pos: tuple[int, int]) -> dict:
    """EmptyLatentImage → KSampler → VAEDecode on SD-XL; returns the VAEDecode node (frame one).
    ``positive``/``negative``: (node, output name) of the conditioning."""
    empty = g.node("EmptyLatentImage", size_pos, outputs=[("LATENT", "LATENT")], widgets=[1024, 640, 1],
                   title="Frame-one size (SD-XL; 1.6:1 like 512×320)", size=(320, 110))
    sampler = g.node("KSampler", (x + 380, 40),
                     inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                             ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")],
                     widgets=[1234, "fixed", 30, 7.0, "dpmpp_2m", "karras", 1.0], size=(320, 260))
    g.link(ckpt, "MODEL", sampler, "model")
    g.link(*positive, sampler, "positive")
    g.link(*negative, sampler, "negative")
    g.link(empty, "LATENT", sampler, "latent_image")
    decode = g.node("VAEDecode", (x + 380, 340), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                    outputs=[("IMAGE", "IMAGE")], size=(220, 50))
    g.link(sampler, "LATENT", decode, "samples")
    g.link(ckpt, "VAE", decode, "vae")
    preview = g.node("PreviewImage", (x + 380, 430), inputs=[("images", "IMAGE")], title="Frame one",
                     size=(320, 260))
    g.link(decode, "IMAGE", preview, "images")
    return decode


def canny_sdxl_frame_one(g: Graph, x: int, canny_y: int, image: tuple[dict, str], prompt: str) -> dict:
    """Canny edges of ``image`` (node, output) steer SD-XL through a Canny ControlNet; returns the VAEDecode node
    of the edited frame one. Canny and its preview at (x, canny_y), the SD-XL nodes in the column x + 380."""
    canny = g.node("Canny", (x, canny_y), inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")],
                   widgets=[0.4, 0.8], size=(320, 90))
    g.link(*image, canny, "image")
    edges = g.node("PreviewImage", (x, canny_y + 130), inputs=[("images", "IMAGE")], title="Canny edges",
                   size=(320, 260))
    g.link(canny, "IMAGE", edges, "images")
    col = x + 380
    sdxl = checkpoint(g, (col, 40), SDXL_CKPT, "SD-XL checkpoint (edited frame one)")
    pos = text(g, (col, 180), sdxl, prompt, "Edit prompt (SD-XL)")
    neg = text(g, (col, 340), sdxl, "blurry, low quality, watermark, text", "Edit negative (SD-XL)")
    cn = g.node("ControlNetLoader", (col, 500), outputs=[("CONTROL_NET", "CONTROL_NET")], widgets=[SDXL_CANNY],
                title="SD-XL Canny ControlNet", size=(340, 60))
    apply = g.node("ControlNetApplyAdvanced", (col, 600),
                   inputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"),
                           ("image", "IMAGE"), ("vae", "VAE")],
                   outputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                   widgets=[0.8, 0.0, 1.0], size=(320, 190))
    g.link(pos, "CONDITIONING", apply, "positive")
    g.link(neg, "CONDITIONING", apply, "negative")
    g.link(cn, "CONTROL_NET", apply, "control_net")
    g.link(canny, "IMAGE", apply, "image")
    g.link(sdxl, "VAE", apply, "vae")
    return sdxl_frame_one(g, col, (apply, "positive"), (apply, "negative"), sdxl, (col, 830))


# ---------------------------------------------------------------------------------------------- LAMP chain
def lamp_base(g: Graph, pos: tuple[int, int]) -> tuple[dict, dict]:
    """SD-1.5 checkpoint → LAMP Load Motion; returns both nodes."""
    sd15 = checkpoint(g, pos, SD15_CKPT, "SD-1.5 checkpoint (LAMP base)")
    motion = g.node("LAMP_LoadMotion", (pos[0], pos[1] + 160), inputs=[("model", "MODEL")],
                    outputs=[("lamp_model", "LAMP_MODEL")], widgets=[MOTION, "auto"], size=(340, 90))
    g.link(sd15, "MODEL", motion, "model")
    return sd15, motion


def lamp_chain(g: Graph, x: int, frame_one: dict, frame_output: str, prompt: str, frames: int = 16,
               base: Optional[tuple[dict, dict]] = None, noise: Optional[tuple[dict, str]] = None,
               long: Optional[list[Any]] = None, control_images: Optional[tuple[dict, str]] = None) -> None:
    """SD-1.5 checkpoint + motion → First Frame → Sampler → VAEDecode → Color Match → WEBP and MP4.
    ``base``: the (checkpoint, Load Motion) nodes when made already; ``noise``: (node, output) of the sampler's
    NOISE instead of LAMP Shared Noise (the editing workflow's inverted start); ``long``: the sampler's
    long-video widgets (default :data:`LONG_DEFAULTS`); ``control_images``: hints for an SD-1.5 ControlNet on
    the LAMP prompts (:func:`sd15_controlnet`)."""
    sd15, motion = base or lamp_base(g, (x, 40))
    pos = text(g, (x, 330), sd15, prompt, "LAMP prompt (SD-1.5 CLIP)")
    neg = text(g, (x, 490), sd15, "", "LAMP negative prompt (SD-1.5 CLIP)")
    positive, negative = sd15_controlnet(g, x, pos, neg, control_images)
    first = g.node("LAMP_FirstFrame", (x + 380, 40), inputs=[("image", "IMAGE"), ("vae", "VAE")],
                   outputs=[("latent", "LATENT"), ("first_frame", "IMAGE")],
                   widgets=[512, 320, frames, "stretch"], size=(320, FIRST_FRAME_HEIGHT))
    g.link(frame_one, frame_output, first, "image")
    g.link(sd15, "VAE", first, "vae")
    if noise is None:
        noise = (g.node("LAMP_SharedNoise", (x + 380, 310), outputs=[("noise", "NOISE")], widgets=[42, "fixed", 0.2],
                        size=(320, 110)), "noise")
    sampler = g.node("LAMP_Sampler", (x + 740, 40),
                     inputs=[("lamp_model", "LAMP_MODEL"), ("positive", "CONDITIONING"),
                             ("negative", "CONDITIONING"), ("latent", "LATENT"), ("noise", "NOISE")],
                     outputs=[("latent", "LATENT")],
                     widgets=[50, 12.5, "ddim", True, "auto", *(long or LONG_DEFAULTS), "official"],
                     size=(320, SAMPLER_HEIGHT))
    g.link(motion, "lamp_model", sampler, "lamp_model")
    g.link(*positive, sampler, "positive")
    g.link(*negative, sampler, "negative")
    g.link(first, "latent", sampler, "latent")
    g.link(*noise, sampler, "noise")
    video_outputs(g, x, 40 + SAMPLER_HEIGHT + 40, (sampler, "latent"), sd15)  # under the sampler and its preview
    g.group("LAMP: frame one + learned motion → video (SD-1.5)", (x - 20, -40, 1520, 1000), "#3f789e")


def video_outputs(g: Graph, x: int, below: int, latent: tuple[dict, str], sd15: dict) -> None:
    """VAE Decode (SD-1.5 VAE) → LAMP Color Match → animated WEBP and MP4, at column x + 740 (from ``below``)
    and x + 1100. ``latent``: (node, output) of the video LATENT."""
    decode = g.node("VAEDecode", (x + 740, below), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                    outputs=[("IMAGE", "IMAGE")], size=(220, 50))
    g.link(*latent, decode, "samples")
    g.link(sd15, "VAE", decode, "vae")
    match = g.node("LAMP_ColorMatch", (x + 740, below + 110), inputs=[("images", "IMAGE"), ("reference", "IMAGE")],
                   outputs=[("images", "IMAGE")], widgets=["histogram", 1.0, False], size=(320, 130))
    g.link(decode, "IMAGE", match, "images")
    webp = g.node("SaveAnimatedWEBP", (x + 1100, 40), inputs=[("images", "IMAGE")],
                  widgets=["LAMP/video", 8.0, False, 90, "default"], size=(360, 420))
    g.link(match, "images", webp, "images")
    video = g.node("CreateVideo", (x + 1100, 500), inputs=[("images", "IMAGE"), ("audio", "AUDIO")],
                   outputs=[("VIDEO", "VIDEO")], widgets=[8.0], size=(270, 80))
    g.link(match, "images", video, "images")
    save = g.node("SaveVideo", (x + 1100, 620), inputs=[("video", "VIDEO")],
                  widgets=["video/LAMP", "auto", "auto"], size=(360, 300))
    g.link(video, "VIDEO", save, "video")


def sdxl_text_frame_one(g: Graph) -> dict:
    """Frame one made by SD-XL from a prompt (column 0); returns its VAEDecode node."""
    sdxl = checkpoint(g, (0, 40), SDXL_CKPT, "SD-XL checkpoint (frame one)")
    pos = text(g, (0, 180), sdxl, "a horse runs on the beach at sunset, photo, highly detailed",
               "Frame-one prompt (SD-XL)")
    neg = text(g, (0, 340), sdxl, "blurry, low quality, watermark, text", "Frame-one negative (SD-XL)")
    decode = sdxl_frame_one(g, 0, (pos, "CONDITIONING"), (neg, "CONDITIONING"), sdxl, (0, 500))
    g.group("Frame one (SD-XL)", (-20, -40, 740, 1000), "#88aa88")
    return decode


def text_to_video() -> Graph:
    """(a) The paper's text-to-video: SD-XL makes frame one, LAMP animates it."""
    g = Graph()
    decode = sdxl_text_frame_one(g)
    lamp_chain(g, 800, decode, "IMAGE", "a horse runs on the beach at sunset")
    return g


def image_to_video() -> Graph:
    """(b) Real-image animation: a photo from LoadImage is frame one."""
    g = Graph()
    load = g.node("LoadImage", (0, 40), outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")],
                  widgets=["example.png", "image"], title="Frame one (your photo)", size=(340, 360))
    g.group("Frame one (a photo)", (-20, -40, 400, 1000), "#88aa88")
    lamp_chain(g, 440, load, "IMAGE", "a horse runs in the field")
    return g


def controlnet_edit() -> Graph:
    """(c) First-frame editing: Canny edges of a photo steer SD-XL through a ControlNet; LAMP animates it."""
    g = Graph()
    load = g.node("LoadImage", (0, 40), outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")],
                  widgets=["example.png", "image"], title="Photo to edit", size=(340, 360))
    decode = canny_sdxl_frame_one(g, 0, 440, (load, "IMAGE"),
                                  "a horse made of gold runs, van gogh style painting, highly detailed")
    g.group("Edited frame one (Canny + ControlNet on SD-XL)", (-20, -40, 1120, 1020), "#88aa88")
    lamp_chain(g, 1160, decode, "IMAGE", "a horse made of gold runs, van gogh style painting")
    return g


def video_edit(per_frame_control: bool = False) -> Graph:
    """(d) Video editing (paper §5.2): invert a source clip with a LAMP motion (ideally tuned on that clip), edit
    its first frame with Canny + ControlNet on SD-XL, and let LAMP re-animate the edit along the source's motion.
    ``per_frame_control`` (h): also the Canny edges of every inverted source frame steer the video through an
    SD-1.5 ControlNet on the LAMP prompts (keeps the source's structure in every frame)."""
    g = Graph()
    load = g.node("LoadVideo", (0, 40), outputs=[("VIDEO", "VIDEO")], widgets=["source.mp4", "image"],
                  title="Source video (upload)", size=(340, 300))
    parts = g.node("GetVideoComponents", (0, 380), inputs=[("video", "VIDEO")],
                   outputs=[("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")], size=(260, 90))
    g.link(load, "VIDEO", parts, "video")
    g.group("Source video", (-20, -40, 400, 530), "#a1309b")
    base = lamp_base(g, (0, 620))  # under the group's title (530 + its 24 px font)
    sd15 = base[0]
    empty = text(g, (0, 910), sd15, "", "Inversion prompt: empty (official)")
    invert = g.node("LAMP_InvertVideo", (0, 1090),
                    inputs=[("images", "IMAGE"), ("vae", "VAE"), ("conditioning", "CONDITIONING"),
                            ("lamp_model", "LAMP_MODEL"), ("model", "MODEL")],  # the node's order; model: native
                    outputs=[("noise", "NOISE"), ("first_frame", "IMAGE"), ("source", "IMAGE")],
                    widgets=[24, 0, 2, 50, 512, 320, "stretch", "auto"], size=(340, 330))
    g.link(base[1], "lamp_model", invert, "lamp_model")
    g.link(parts, "images", invert, "images")
    g.link(sd15, "VAE", invert, "vae")
    g.link(empty, "CONDITIONING", invert, "conditioning")
    g.group("LAMP: invert the source (SD-1.5)", (-20, 540, 400, 910), "#3f789e")
    decode = canny_sdxl_frame_one(g, 440, 40, (invert, "first_frame"),
                                  "a robot runs beside a river, van gogh style painting, highly detailed")
    g.group("Edited frame one (Canny + ControlNet on SD-XL)", (420, -40, 1120, 1020), "#88aa88")
    hints = None
    if per_frame_control:
        hints = (g.node("Canny", (1600, 40), inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")],
                        widgets=[0.4, 0.8], title="Canny of every inverted source frame", size=(340, 90)), "IMAGE")
        g.link(invert, "source", hints[0], "image")
    lamp_chain(g, 1600, decode, "IMAGE", "a robot runs beside a river, van gogh style painting", frames=24,
               base=base, noise=(invert, "noise"), control_images=hints)
    return g


def long_video() -> Graph:
    """(e) A 64-frame video from a 16-frame LAMP motion: a photo is frame one, the sampler makes five segments
    of 16 frames sharing 4 frames, frame-0 attention locked on frame one (README: Long videos)."""
    g = Graph()
    load = g.node("LoadImage", (0, 40), outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")],
                  widgets=["example.png", "image"], title="Frame one (your photo)", size=(340, 360))
    g.group("Frame one (a photo)", (-20, -40, 400, 1000), "#88aa88")
    lamp_chain(g, 440, load, "IMAGE", "a horse runs in the field", frames=64, long=LONG_DEFAULTS)
    return g


SD15_CANNY = "control_v11p_sd15_canny.safetensors"


def sd15_controlnet(g: Graph, x: int, pos: dict, neg: dict, control_images: Optional[tuple[dict, str]]
                    ) -> tuple[tuple[dict, str], tuple[dict, str]]:
    """The LAMP prompts (positive, negative) as they reach the sampler: with ``control_images`` ((node, output) of a
    hint batch, one image per frame) an SD-1.5 Canny ControlNet at (x, 650) is applied to both."""
    if control_images is None:
        return (pos, "CONDITIONING"), (neg, "CONDITIONING")
    cn = g.node("ControlNetLoader", (x, 650), outputs=[("CONTROL_NET", "CONTROL_NET")], widgets=[SD15_CANNY],
                title="SD-1.5 Canny ControlNet (every frame)", size=(340, 60))
    apply = g.node("ControlNetApplyAdvanced", (x, 750),
                   inputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                           ("control_net", "CONTROL_NET"), ("image", "IMAGE"), ("vae", "VAE")],
                   outputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                   widgets=[0.7, 0.0, 1.0], title="Apply ControlNet (one hint per frame)", size=(340, 190))
    g.link(pos, "CONDITIONING", apply, "positive")
    g.link(neg, "CONDITIONING", apply, "negative")
    g.link(cn, "CONTROL_NET", apply, "control_net")
    g.link(*control_images, apply, "image")
    return (apply, "positive"), (apply, "negative")


def native_chain(g: Graph, x: int, frame_one: dict, frame_output: str, prompt: str, frames: int = 16,
                 sampler: str = "ksampler", control_images: Optional[tuple[dict, str]] = None) -> None:
    """The native path: SD-1.5 checkpoint → LAMP Apply Motion (a LAMP MODEL) → ComfyUI's own sampling.

    ``sampler``: "ksampler" (core KSampler, any sampler/scheduler; not the paper's schedule) or "lamp_ddim"
    (SamplerCustomAdvanced + LAMP DDIM Sampler + LAMP DDIM Sigmas + LAMP Shared Noise: the official loop).
    ``control_images``: (node, output) of a hint batch (one image per frame) for an SD-1.5 ControlNet on the
    LAMP prompts."""
    sd15 = checkpoint(g, (x, 40), SD15_CKPT, "SD-1.5 checkpoint (LAMP base)")
    motion = g.node("LAMP_ApplyMotion", (x, 200), inputs=[("model", "MODEL")], outputs=[("model", "MODEL")],
                    widgets=[MOTION], size=(340, 80))
    g.link(sd15, "MODEL", motion, "model")
    pos = text(g, (x, 330), sd15, prompt, "LAMP prompt (SD-1.5 CLIP)")
    neg = text(g, (x, 490), sd15, "", "LAMP negative prompt (SD-1.5 CLIP)")
    positive, negative = sd15_controlnet(g, x, pos, neg, control_images)
    first = g.node("LAMP_FirstFrame", (x + 380, 40), inputs=[("image", "IMAGE"), ("vae", "VAE")],
                   outputs=[("latent", "LATENT"), ("first_frame", "IMAGE")],
                   widgets=[512, 320, frames, "stretch"], size=(320, FIRST_FRAME_HEIGHT))
    g.link(frame_one, frame_output, first, "image")
    g.link(sd15, "VAE", first, "vae")
    if sampler == "ksampler":
        ks = g.node("KSampler", (x + 740, 40),
                    inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                            ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")],
                    widgets=[42, "fixed", 30, 7.5, "dpmpp_2m", "karras", 1.0],
                    title="KSampler (any sampler)", size=(320, 262))
        g.link(motion, "model", ks, "model")
        g.link(*positive, ks, "positive")
        g.link(*negative, ks, "negative")
        g.link(first, "latent", ks, "latent_image")
        latent = (ks, "LATENT")
    else:
        noise = g.node("LAMP_SharedNoise", (x + 380, 310), outputs=[("noise", "NOISE")], widgets=[42, "fixed", 0.2],
                       size=(320, 110))
        guider = g.node("CFGGuider", (x + 380, 460),
                        inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                        outputs=[("GUIDER", "GUIDER")], widgets=[12.5], size=(320, 100))
        g.link(motion, "model", guider, "model")
        g.link(*positive, guider, "positive")
        g.link(*negative, guider, "negative")
        ddim = g.node("LAMP_DDIMSampler", (x + 380, 620), outputs=[("sampler", "SAMPLER")], widgets=[True],
                      size=(320, 60))
        sigmas = g.node("LAMP_DDIMSigmas", (x + 380, 740), outputs=[("sigmas", "SIGMAS")], widgets=[50],
                        size=(320, 60))
        ks = g.node("SamplerCustomAdvanced", (x + 740, 40),
                    inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                            ("latent_image", "LATENT")],
                    outputs=[("output", "LATENT"), ("denoised_output", "LATENT")],
                    title="SamplerCustomAdvanced", size=(320, 262))
        g.link(noise, "noise", ks, "noise")
        g.link(guider, "GUIDER", ks, "guider")
        g.link(ddim, "sampler", ks, "sampler")
        g.link(sigmas, "sigmas", ks, "sigmas")
        g.link(first, "latent", ks, "latent_image")
        latent = (ks, "output")
    video_outputs(g, x, 342, latent, sd15)
    g.group("LAMP, native: LAMP Apply Motion → ComfyUI's own sampling (SD-1.5)", (x - 20, -40, 1520, 1000), "#3f789e")


def native_ksampler() -> Graph:
    """(f) SD-XL frame one → LAMP Apply Motion → core KSampler → decode → Color Match → save."""
    g = Graph()
    decode = sdxl_text_frame_one(g)
    native_chain(g, 800, decode, "IMAGE", "a horse runs on the beach at sunset")
    return g


def controlnet_video() -> Graph:
    """(g) A source video's motion outline steers LAMP: Canny of every source frame → SD-1.5 ControlNet on the
    LAMP prompts; frame one is the source's first frame, restyled by SD-XL with a Canny ControlNet."""
    g = Graph()
    load = g.node("LoadVideo", (0, 40), outputs=[("VIDEO", "VIDEO")], widgets=["source.mp4", "image"],
                  title="Source video (upload)", size=(340, 360))
    parts = g.node("GetVideoComponents", (0, 440), inputs=[("video", "VIDEO")],
                   outputs=[("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")], size=(260, 90))
    g.link(load, "VIDEO", parts, "video")
    first = g.node("ImageFromBatch", (0, 570), inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")],
                   widgets=[0, 1], title="The source's first frame", size=(260, 90))
    g.link(parts, "images", first, "image")
    hints = g.node("Canny", (0, 700), inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")],
                   widgets=[0.4, 0.8], title="Canny of every source frame (the hints)", size=(320, 90))
    g.link(parts, "images", hints, "image")
    g.group("Source video", (-20, -40, 400, 880), "#a1309b")
    decode = canny_sdxl_frame_one(g, 440, 40, (first, "IMAGE"),
                                  "a horse made of gold runs, van gogh style painting, highly detailed")
    g.group("Edited frame one (the source's first frame → Canny + ControlNet on SD-XL)", (420, -40, 1120, 1020),
            "#88aa88")
    native_chain(g, 1600, decode, "IMAGE", "a horse made of gold runs, van gogh style painting",
                 sampler="lamp_ddim", control_images=(hints, "IMAGE"))
    return g


def train_workflow() -> Graph:
    """Few-shot training in chunks: Train Init → Train Steps (loss plot) → Validate / Save Motion."""
    g = Graph()
    sd15 = checkpoint(g, (0, 40), SD15_CKPT, "SD-1.5 checkpoint (the base to learn on)")
    init = g.node("LAMP_TrainInit", (380, 40), inputs=[("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE")],
                  outputs=[("train_state", "LAMP_TRAIN_STATE"), ("report", "STRING")],
                  widgets=["horse_run", "", "", 16, 1, 512, 320, "stretch", True, 3e-5, 33, "auto", True, False,
                           500, True, False],
                  title="LAMP Train Init (video folder under ComfyUI/input)", size=(360, 560))
    g.link(sd15, "MODEL", init, "model")
    g.link(sd15, "CLIP", init, "clip")
    g.link(sd15, "VAE", init, "vae")
    steps = g.node("LAMP_TrainSteps", (780, 40), inputs=[("train_state", "LAMP_TRAIN_STATE")],
                   outputs=[("train_state", "LAMP_TRAIN_STATE"), ("loss_plot", "IMAGE"), ("report", "STRING")],
                   widgets=[250, True], title="LAMP Train Steps (queue again to train on)", size=(340, 132))
    g.link(init, "train_state", steps, "train_state")
    plot = g.node("PreviewImage", (780, 212), inputs=[("images", "IMAGE")], title="Loss", size=(420, 300))
    g.link(steps, "loss_plot", plot, "images")
    save = g.node("LAMP_SaveMotion", (780, 572), inputs=[("train_state", "LAMP_TRAIN_STATE")],
                  outputs=[("motion_file", "STRING")], widgets=["", True, False], size=(340, 130))
    g.link(steps, "train_state", save, "train_state")
    load = g.node("LoadImage", (1240, 40), outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")],
                  widgets=["example.png", "image"], title="Validation first frame", size=(320, 330))
    val = g.node("LAMP_TrainValidate", (1240, 430),
                 inputs=[("train_state", "LAMP_TRAIN_STATE"), ("vae", "VAE"), ("first_frame", "IMAGE"),
                         ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                 outputs=[("frames", "IMAGE"), ("latent", "LATENT")], widgets=[25, 12.5, 0], size=(320, 190))
    g.link(steps, "train_state", val, "train_state")
    g.link(sd15, "VAE", val, "vae")
    g.link(load, "IMAGE", val, "first_frame")
    webp = g.node("SaveAnimatedWEBP", (1600, 40), inputs=[("images", "IMAGE")],
                  widgets=["LAMP/training", 8.0, False, 90, "default"], size=(360, 420))
    g.link(val, "frames", webp, "images")
    g.group("LAMP few-shot training: 8-16 clips of one motion → motion file in models/lamp", (-20, -40, 2000, 760),
            "#3f789e")
    return g


WORKFLOWS = {
    "lamp_sdxl_text_to_video.json": text_to_video,
    "lamp_image_to_video.json": image_to_video,
    "lamp_sdxl_controlnet_edit_to_video.json": controlnet_edit,
    "lamp_train.json": train_workflow,
    "lamp_video_edit.json": video_edit,
    "lamp_video_edit_controlnet.json": lambda: video_edit(per_frame_control=True),
    "lamp_long_video.json": long_video,
    "lamp_native_ksampler.json": native_ksampler,
    "lamp_controlnet_video.json": controlnet_video,
}


def main() -> None:
    for name, build in WORKFLOWS.items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            json.dump(build().to_json(), f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
