"""The one place where ComfyUI-LAMP talks to ComfyUI.

Every call into ComfyUI (``folder_paths``, ``comfy.utils``, ``comfy.model_management``, ``latent_preview``)
lives here, and each one has a plain-Python fallback used when ComfyUI is not importable. That keeps the
node classes testable as plain classes on CPU, and lets the training nodes share the same services.

Public API (kept stable; the training nodes import it):

- model folder: :func:`register_lamp_folder`, :func:`lamp_folder`, :func:`lamp_folders`,
  :func:`list_motion_files`, :func:`motion_path`, :data:`MOTION_EXTENSIONS`
- other folders: :func:`input_dir`, :func:`output_dir`, :func:`temp_dir`
- progress and Cancel: :func:`progress` (an object with ``.update(n, preview=None)``),
  :func:`check_interrupt`, :func:`interrupted`, :data:`Interrupted`
- devices and memory: :func:`torch_device`, :func:`offload_device`, :func:`intermediate_device`,
  :func:`auto_dtype`, :func:`make_room`, :func:`free_memory`, :func:`empty_cache`,
  :func:`patched_unet_state_dict`, :func:`unet_context_width`
- messages on the node: :func:`node_result` (warnings shown on the node by ``web/lamp_messages.js``)
- tests only: :func:`simulate_cancel`, :func:`configure_fallback`
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from typing import Any, Callable, Iterator, Optional

import torch

log = logging.getLogger("ComfyUI-LAMP")

#: Name of the model folder registered with ComfyUI (``models/lamp``; also settable in extra_model_paths.yaml).
FOLDER_NAME = "lamp"
#: File types listed in the motion-file combo. Set explicitly: a folder first created through
#: ``add_model_folder_path`` or ``extra_model_paths.yaml`` would otherwise accept every file.
MOTION_EXTENSIONS = {".safetensors", ".ckpt", ".bin", ".pt"}

try:  # ComfyUI is present: use its services.
    import folder_paths as _fp
    import comfy.model_management as _mm
    import comfy.utils as _cu
    HAS_COMFY = True
except Exception:  # noqa: BLE001 - any import failure means "no usable ComfyUI"; fall back to plain Python
    _fp = _mm = _cu = None
    HAS_COMFY = False

try:
    import latent_preview as _lp
    import comfy.latent_formats as _lf
except Exception:  # noqa: BLE001 - previews are optional
    _lp = _lf = None


# ----------------------------------------------------------------------------------------------------------
# Interrupts (ComfyUI's Cancel button)
# ----------------------------------------------------------------------------------------------------------

class _FallbackInterrupted(Exception):
    """Raised by :func:`check_interrupt` when a cancel was requested (outside ComfyUI)."""


#: The exception a Cancel raises. Inside ComfyUI it is ComfyUI's own InterruptProcessingException, so the
#: executor reports the run as interrupted (not failed). Never catch it without re-raising.
Interrupted: type = _mm.InterruptProcessingException if HAS_COMFY else _FallbackInterrupted

_cancel_lock = threading.Lock()
_cancel_countdown: Optional[int] = None


def simulate_cancel(after: int = 0) -> None:
    """Test hook: make the (``after`` + 1)-th following :func:`check_interrupt` call raise :data:`Interrupted`,
    as if the user pressed Cancel. ``simulate_cancel(-1)`` clears a pending request."""
    global _cancel_countdown
    with _cancel_lock:
        _cancel_countdown = None if after < 0 else after


def interrupted() -> bool:
    """True when a Cancel is pending (does not consume it)."""
    if HAS_COMFY and _mm.processing_interrupted():
        return True
    with _cancel_lock:
        return _cancel_countdown == 0


def check_interrupt() -> None:
    """Raise :data:`Interrupted` if the user pressed Cancel; call it between steps of any long loop."""
    global _cancel_countdown
    with _cancel_lock:
        if _cancel_countdown is not None:
            if _cancel_countdown == 0:
                _cancel_countdown = None
                raise Interrupted()
            _cancel_countdown -= 1
    if HAS_COMFY:
        _mm.throw_exception_if_processing_interrupted()


# ----------------------------------------------------------------------------------------------------------
# Progress bar and latent previews
# ----------------------------------------------------------------------------------------------------------

def _latent_grid(latents: torch.Tensor, max_frames: int = 16) -> torch.Tensor:
    """Tile the frames of a video latent ``[B,C,F,h,w]`` (or ``[F,C,h,w]``) into one ``[1,C,H,W]`` image."""
    if latents.ndim == 5:
        frames = latents[0].transpose(0, 1)  # [F, C, h, w]
    else:
        frames = latents
    frames = frames[:max_frames].detach().float()
    n, c, h, w = frames.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = frames.new_zeros(c, rows * h, cols * w)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = frames[i]
    return grid.unsqueeze(0)


class Progress:
    """A progress bar over ``total`` steps. ``update`` is also a Cancel point.

    Inside ComfyUI it drives ``comfy.utils.ProgressBar`` (the UI bar) and, when ``previews`` is on and
    ComfyUI offers a latent previewer, the preview image. Outside ComfyUI it logs at DEBUG level and keeps
    the values it was given in ``history`` (used by tests).
    """

    def __init__(self, total: int, previews: bool = False) -> None:
        self.total = int(total)
        self.current = 0
        self.history: list[int] = []
        self._bar = _cu.ProgressBar(self.total) if HAS_COMFY else None
        self._previewer = None
        if previews and _lp is not None and _lf is not None:
            try:
                self._previewer = _lp.get_previewer(torch_device(), _lf.SD15())
            except Exception as e:  # noqa: BLE001 - a missing preview must never stop sampling
                log.debug("[LAMP] no latent preview: %s", e)

    def update(self, n: int = 1, preview: Optional[torch.Tensor] = None) -> None:
        """Advance by ``n`` steps. ``preview``: optional SD-1.x latents (scaled, ``[B,4,F,h,w]`` or
        ``[F,4,h,w]``) shown as a frame grid when ComfyUI has a previewer."""
        self.update_absolute(self.current + n, preview)

    def update_absolute(self, value: int, preview: Optional[torch.Tensor] = None) -> None:
        """Set the bar to ``value`` of ``total`` (see :meth:`update`)."""
        check_interrupt()
        self.current = min(int(value), self.total)
        self.history.append(self.current)
        if self._bar is None:
            log.debug("[LAMP] progress %d/%d", self.current, self.total)
            return
        image = None
        if preview is not None and self._previewer is not None:
            try:
                image = self._previewer.decode_latent_to_preview_image("JPEG", _latent_grid(preview))
            except Exception as e:  # noqa: BLE001 - previews are cosmetic
                log.debug("[LAMP] preview failed: %s", e)
                self._previewer = None
        self._bar.update_absolute(self.current, self.total, image)


def progress(total: int, previews: bool = False) -> Progress:
    """Create a :class:`Progress` for a loop of ``total`` steps (``previews``: also send latent previews)."""
    return Progress(total, previews)


# ----------------------------------------------------------------------------------------------------------
# Devices and memory
# ----------------------------------------------------------------------------------------------------------

def torch_device() -> torch.device:
    """The device to compute on: ComfyUI's choice (honours --cpu etc.), else CUDA if available, else CPU."""
    if HAS_COMFY:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle model weights wait (CPU unless ComfyUI runs with --gpu-only/--highvram)."""
    if HAS_COMFY:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (LATENT, IMAGE tensors) should live between nodes."""
    if HAS_COMFY:
        return _mm.intermediate_device()
    return torch.device("cpu")


def auto_dtype(device: Optional[torch.device] = None, params: int = 0) -> torch.dtype:
    """The compute dtype ComfyUI would pick for a UNet of ``params`` parameters on ``device``
    (fp16 > bf16 > fp32 by what the device supports). Without ComfyUI: fp16 on CUDA, else fp32."""
    device = device or torch_device()
    if HAS_COMFY:
        if _mm.should_use_fp16(device, model_params=params):
            return torch.float16
        if _mm.should_use_bf16(device, model_params=params):
            return torch.bfloat16
        return torch.float32
    return torch.float16 if device.type == "cuda" else torch.float32


def make_room(bytes_needed: int, device: Optional[torch.device] = None) -> None:
    """Ask ComfyUI to offload other models until ``bytes_needed`` are free on ``device`` (no-op outside)."""
    device = device or torch_device()
    if HAS_COMFY and device.type != "cpu":
        _mm.free_memory(int(bytes_needed), device)


def empty_cache() -> None:
    """Release cached allocator blocks (after a run or a Cancel)."""
    if HAS_COMFY:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_memory() -> None:
    """Unload every model ComfyUI holds on the compute device and empty the cache (before training)."""
    if HAS_COMFY:
        _mm.unload_all_models()
    empty_cache()


def patched_unet_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The UNet weights of a ComfyUI MODEL (ModelPatcher) in LDM naming, with its LoRA/weight patches applied,
    copied to CPU. ComfyUI first loads this MODEL (fully), which applies its own patches and removes those of
    any clone loaded before (clones share one UNet module, patched in place); then the tensors are copied."""
    if HAS_COMFY and hasattr(model, "load_device"):
        _mm.load_models_gpu([model], force_full_load=True)
    unet = model.model.diffusion_model
    return {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}


def unet_context_width(model: Any) -> Optional[int]:
    """The text-context width of a ComfyUI MODEL's UNet, read from a cross-attention key's shape (nothing is
    loaded or copied); None when it has no cross-attention."""
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not hasattr(unet, "state_dict"):
        return None
    return next((int(t.shape[1]) for name, t in unet.state_dict().items()  # references, no copies
                 if name.endswith("attn2.to_k.weight") and t.ndim == 2), None)


# ----------------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------------

_PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_fallback_dirs = {
    "lamp": os.path.join(_PACK_ROOT, "models", "lamp"),
    "input": os.path.join(_PACK_ROOT, "input"),
    "output": os.path.join(_PACK_ROOT, "output"),
    "temp": os.path.join(_PACK_ROOT, "temp"),
}
_registered = False


def configure_fallback(lamp: Optional[str] = None, input: Optional[str] = None,  # noqa: A002
                       output: Optional[str] = None, temp: Optional[str] = None) -> None:
    """Set the folders used when ComfyUI is absent (tests, scripts). Ignored inside ComfyUI."""
    for key, value in (("lamp", lamp), ("input", input), ("output", output), ("temp", temp)):
        if value is not None:
            _fallback_dirs[key] = str(value)


def register_lamp_folder() -> list[str]:
    """Register ``models/lamp`` with ComfyUI (idempotent), create it if missing, and log one start-up line
    naming the folder(s) and how many motion files they hold. Returns the folder list."""
    global _registered
    if not HAS_COMFY:
        folders = [_fallback_dirs["lamp"]]
    else:
        default = os.path.join(_fp.models_dir, FOLDER_NAME)
        entry = _fp.folder_names_and_paths.get(FOLDER_NAME)
        if entry is None:
            _fp.folder_names_and_paths[FOLDER_NAME] = ([default], set(MOTION_EXTENSIONS))
        else:  # e.g. created by extra_model_paths.yaml: keep its paths, add the default, fix the extensions
            paths = list(entry[0])
            if default not in paths:
                paths.append(default)
            _fp.folder_names_and_paths[FOLDER_NAME] = (paths, set(MOTION_EXTENSIONS))
        folders = list(_fp.folder_names_and_paths[FOLDER_NAME][0])
        try:
            os.makedirs(default, exist_ok=True)
        except OSError as e:
            log.warning("[LAMP] could not create %s: %s", default, e)
    if not _registered:
        _registered = True
        if HAS_COMFY:
            n = len(list_motion_files())
            hint = "" if n else " (put LAMP motion files or official checkpoints there)"
            log.info("[LAMP] motion folder: %s, %d motion file(s)%s", ", ".join(folders), n, hint)
    return folders


def lamp_folders() -> list[str]:
    """All folders searched for motion files (the default one first inside a plain ComfyUI)."""
    if HAS_COMFY:
        if FOLDER_NAME not in _fp.folder_names_and_paths:
            register_lamp_folder()
        return list(_fp.get_folder_paths(FOLDER_NAME))
    return [_fallback_dirs["lamp"]]


def lamp_folder() -> str:
    """The folder where new motion files are written (``models/lamp``), created if missing."""
    folders = lamp_folders()
    default = os.path.join(_fp.models_dir, FOLDER_NAME) if HAS_COMFY else folders[0]
    path = default if default in folders else folders[0]
    os.makedirs(path, exist_ok=True)
    return path


def list_motion_files() -> list[str]:
    """Motion files in the lamp folder(s), as relative names (what the combo shows), sorted."""
    if HAS_COMFY:
        if FOLDER_NAME not in _fp.folder_names_and_paths:
            register_lamp_folder()
        return sorted(_fp.get_filename_list(FOLDER_NAME))
    root = _fallback_dirs["lamp"]
    found = []
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            if os.path.splitext(f)[1].lower() in MOTION_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(found)


def motion_path(name: str) -> str:
    """Absolute path of the motion file ``name`` from the combo. Raises FileNotFoundError naming the folders."""
    path = None
    if HAS_COMFY:
        path = _fp.get_full_path(FOLDER_NAME, name)
    else:  # like folder_paths: a name may hold sub-folders but never leave the lamp folder
        root = os.path.realpath(_fallback_dirs["lamp"])
        candidate = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([root, candidate]) == root and os.path.isfile(candidate):
            path = candidate
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"LAMP: motion file '{name}' not found in {', '.join(lamp_folders())}. Put the file there "
            "(or convert an official checkpoint with the 'LAMP Convert Official' node) and refresh the page.")
    return path


#: Model folder for the CLIP of the metrics node: one sub-folder per transformers CLIP (``models/lamp_clip``;
#: also settable in extra_model_paths.yaml). Folders are listed, not files, so no extension filter applies.
CLIP_FOLDER_NAME = "lamp_clip"


def clip_folders() -> list[str]:
    """The folders searched for evaluation CLIPs, registered with ComfyUI (and created) on first use."""
    if not HAS_COMFY:
        return [_fallback_dirs.get(CLIP_FOLDER_NAME, os.path.join(_PACK_ROOT, "models", CLIP_FOLDER_NAME))]
    default = os.path.join(_fp.models_dir, CLIP_FOLDER_NAME)
    entry = _fp.folder_names_and_paths.get(CLIP_FOLDER_NAME)
    if entry is None or default not in entry[0]:
        _fp.folder_names_and_paths[CLIP_FOLDER_NAME] = ([*(entry[0] if entry else []), default], set())
    try:
        os.makedirs(default, exist_ok=True)
    except OSError as e:
        log.warning("[LAMP] could not create %s: %s", default, e)
    return list(_fp.folder_names_and_paths[CLIP_FOLDER_NAME][0])


def list_clip_models() -> list[str]:
    """Names of the sub-folders of the CLIP folders that hold a ``config.json`` (what the combo shows)."""
    found = set()
    for root in clip_folders():
        if os.path.isdir(root):
            found.update(name for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, "config.json")))
    return sorted(found)


def clip_model_path(name: str) -> str:
    """Absolute path of the CLIP folder ``name`` (a combo entry, a path relative to a CLIP folder, or an
    absolute path). Raises FileNotFoundError naming where it looked."""
    name = (name or "").strip().strip('"').strip("'")
    expanded = os.path.expanduser(name)
    candidates = [expanded] if os.path.isabs(expanded) else [os.path.join(root, name) for root in clip_folders()]
    for candidate in candidates:
        if name and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"LAMP: CLIP folder '{name}' not found (looked in: {', '.join(candidates)}). Put a "
                            f"whole transformers CLIP folder (e.g. openai/clip-vit-large-patch14 saved locally) into "
                            f"models/{CLIP_FOLDER_NAME}/ or give its absolute path.")


def node_result(result: tuple, warnings: list[str]) -> tuple | dict:
    """A node's return value: the plain ``result`` tuple, or, with warnings, ComfyUI's ``{"ui", "result"}``
    form whose ``lamp_warning`` texts the pack's web extension shows on the node (and as a toast). Each
    warning is logged too, for the console."""
    for text in warnings:
        log.warning("[LAMP] %s", text)
    if not warnings:
        return result
    return {"ui": {"lamp_warning": list(warnings)}, "result": result}


def input_dir() -> str:
    """ComfyUI's input folder (LoadImage uploads, video sets for training)."""
    return _fp.get_input_directory() if HAS_COMFY else _fallback_dirs["input"]


def output_dir() -> str:
    """ComfyUI's output folder."""
    return _fp.get_output_directory() if HAS_COMFY else _fallback_dirs["output"]


def temp_dir() -> str:
    """ComfyUI's temp folder (previews, scratch files)."""
    return _fp.get_temp_directory() if HAS_COMFY else _fallback_dirs["temp"]


def callback_for(bar: Progress, preview_every: int = 1) -> Callable[[int, int, torch.Tensor], None]:
    """Adapt a :class:`Progress` to the engine's ``callback(step, total, latents)`` convention: one bar step
    (and Cancel point) per call, with a latent preview every ``preview_every`` steps."""
    def callback(step: int, total: int, latents: torch.Tensor) -> None:
        show = preview_every > 0 and (step + 1) % preview_every == 0
        bar.update_absolute(step + 1, latents if show else None)
    return callback


# ----------------------------------------------------------------------------------------------------------
# The native path: a LAMP-patched ComfyUI MODEL, a SAMPLER for SamplerCustomAdvanced
# ----------------------------------------------------------------------------------------------------------

#: Key of the LAMP wrappers and additional models on a ModelPatcher.
NATIVE_KEY = "lamp_motion"


def _require_comfy(what: str) -> None:
    if not HAS_COMFY:
        raise RuntimeError(f"LAMP: {what} needs a running ComfyUI (comfy.model_patcher, comfy.samplers).")


def patch_model(model: Any, motion: torch.nn.Module, diffusion_model_wrapper: Callable,
                sampler_sample_wrapper: Callable) -> Any:
    """A clone of the ComfyUI MODEL ``model`` (never the input itself) whose diffusion-model call goes through
    ``diffusion_model_wrapper`` and whose sampler run through ``sampler_sample_wrapper`` (ComfyUI's
    ``WrappersMP.DIFFUSION_MODEL`` / ``SAMPLER_SAMPLE``), with the ``motion`` module attached as an additional
    model so that ComfyUI loads and offloads it together with the UNet."""
    _require_comfy("LAMP Apply Motion")
    import comfy.model_patcher as mp
    import comfy.patcher_extension as pe
    patched = model.clone()
    patched.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, NATIVE_KEY)
    patched.remove_wrappers_with_key(pe.WrappersMP.SAMPLER_SAMPLE, NATIVE_KEY)
    patched.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, NATIVE_KEY, diffusion_model_wrapper)
    patched.add_wrapper_with_key(pe.WrappersMP.SAMPLER_SAMPLE, NATIVE_KEY, sampler_sample_wrapper)
    patched.set_additional_models(NATIVE_KEY, [mp.ModelPatcher(motion, load_device=model.load_device,
                                                               offload_device=model.offload_device)])
    return patched


def native_wrapper(model: Any) -> Optional[Callable]:
    """The diffusion-model wrapper that :func:`patch_model` put on a ComfyUI MODEL (ModelPatcher) under
    :data:`NATIVE_KEY`, or None for a MODEL without one (or anything that is not a ModelPatcher).

    ComfyUI keeps wrappers as ``{wrapper type: {key: [wrapper, …]}}`` behind ``get_wrappers(type, key)`` (the
    same in 0.3.64 and later releases); the wrapper type is ``WrappersMP.DIFFUSION_MODEL`` = "diffusion_model".
    """
    get = getattr(model, "get_wrappers", None)
    if not callable(get):
        return None
    found = get("diffusion_model", NATIVE_KEY)
    return found[-1] if found else None


def load_for_run(model: Any, shape: tuple[int, ...]) -> None:
    """Load a ComfyUI MODEL and its additional models (LAMP's motion module) on the compute device the way a
    ComfyUI sampler does, with room for a batch of ``shape`` (``[frames, C, h, w]``); no-op outside ComfyUI."""
    if not HAS_COMFY:
        return
    models = [model, *model.get_nested_additional_models()]
    _mm.load_models_gpu(models, memory_required=model.memory_required(list(shape)))


def unet_module(model: Any) -> torch.nn.Module:
    """The 2-D UNet module (``diffusion_model``) of a ComfyUI MODEL, in LDM naming."""
    return model.model.diffusion_model


def compute_dtype(model: Any) -> torch.dtype:
    """The dtype ComfyUI runs a MODEL's UNet in (its manual-cast dtype when the weights are stored otherwise)."""
    base = model.model
    return getattr(base, "manual_cast_dtype", None) or base.get_dtype()


def tensor_slots(unet: torch.nn.Module, names: dict[str, str]) -> list[tuple[str, torch.nn.Module, str]]:
    """``(lamp name, owning module, attribute)`` for each LAMP -> LDM name of ComfyUI's UNet ``unet`` (looked up
    once; the tensors themselves are read at every call by :func:`live_tensors`)."""
    modules = dict(unet.named_modules())
    return [(lamp, modules[ldm.rpartition(".")[0]], ldm.rpartition(".")[2]) for lamp, ldm in names.items()]


def live_tensors(slots: list[tuple[str, torch.nn.Module, str]], device: torch.device,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``{lamp name: tensor}`` read from ComfyUI's UNet at call time (``slots`` from :func:`tensor_slots`): its
    LoRA/weight patches are in place, and those ComfyUI applies lazily (``weight_function`` / ``bias_function``
    in low-VRAM mode) are applied here; cast to ``device``/``dtype`` (no copy when they match)."""
    out = {}
    for lamp, module, leaf in slots:
        tensor = getattr(module, leaf).to(device=device, dtype=dtype)
        for fn in getattr(module, f"{leaf}_function", None) or ():
            tensor = fn(tensor)
        out[lamp] = tensor
    return out


def k_sampler(sampler_function: Callable) -> Any:
    """A ComfyUI SAMPLER (``comfy.samplers.KSAMPLER``) running ``sampler_function(model, x, sigmas, extra_args,
    callback, disable)`` in k-diffusion conventions."""
    _require_comfy("LAMP DDIM Sampler")
    import comfy.samplers as cs
    return cs.KSAMPLER(sampler_function)


@contextlib.contextmanager
def context_windows_fixed(model_options: dict) -> Iterator[None]:
    """While one sampling run lasts, let ComfyUI's context-window handler (``ContextWindowsManual``) find its step
    from the first sample's sigma. ComfyUI 0.3.x compares all ``sample_sigmas`` with the whole per-frame sigma
    batch, which fails as soon as the frames are on the batch axis (dim 0); newer ComfyUI compares with the
    first sigma only, which is what this does for any version. Nothing happens without a handler."""
    handler = (model_options or {}).get("context_handler")
    original = getattr(handler, "set_step", None)
    if original is None:
        yield
        return
    handler.set_step = lambda timestep, options: original(timestep.reshape(-1)[:1], options)
    try:
        yield
    finally:
        del handler.set_step  # back to the class's method


# ----------------------------------------------------------------------------------------------------------
# ControlNets (CONDITIONING "control" chains), for both paths
# ----------------------------------------------------------------------------------------------------------

def control_chain(control: Any) -> list[Any]:
    """The ControlNets of a ComfyUI control chain (``previous_controlnet`` links), first applied last."""
    chain = []
    while control is not None:
        chain.append(control)
        control = getattr(control, "previous_controlnet", None)
    return chain


def check_sd1_control(control: Any, node: str = "LAMP") -> None:
    """Refuse, with the family it needs, a control chain that is not made of SD-1.x ControlNets (SD-XL
    ControlNets and Control-LoRAs, T2I-Adapters, ControlNets of other model families)."""
    for c in control_chain(control):
        kind = type(c).__name__
        model = getattr(c, "control_model", None)
        sd1 = (kind == "ControlNet" and type(model).__module__.endswith("cldm.cldm")
               and getattr(model, "num_classes", None) is None and getattr(model, "model_channels", None) == 320)
        if not sd1:
            family = ("an SD-XL Control-LoRA" if kind == "ControlLora" else "a T2I-Adapter" if kind == "T2IAdapter"
                      else "an SD-XL ControlNet" if getattr(model, "num_classes", None) is not None
                      else f"a {kind} of another model family")
            raise ValueError(f"{node}: the conditioning carries {family}; the LAMP part is SD-1.x and needs an "
                             "SD-1.5 ControlNet (e.g. control_v11p_sd15_canny). Apply SD-XL ControlNets where frame "
                             "one is made, not on the LAMP prompts.")


@contextlib.contextmanager
def controls_ready(controls: list[Any], device: torch.device) -> Iterator[Any]:
    """Prepare ControlNets for a sampling loop that ComfyUI does not run (the LAMP Sampler): their start/end
    percent against the SD-1.x noise schedule, their weights loaded on ``device``; cleaned up afterwards.
    Yields the SD-1.x model-sampling object (sigma <-> timestep)."""
    _require_comfy("ControlNet in the LAMP Sampler")
    import comfy.model_sampling as ms

    class _SD1Sampling(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    sampling = _SD1Sampling()
    holder = type("SD1ModelForControl", (), {"model_sampling": sampling})()
    unique = list({id(c): c for c in controls}.values())
    try:
        models = []
        for c in unique:
            c.pre_run(holder, sampling.percent_to_sigma)
            models += c.get_models()
        if models and HAS_COMFY:
            _mm.load_models_gpu(models)
        yield sampling
    finally:
        for c in unique:
            c.cleanup()


@contextlib.contextmanager
def hints_for_frames(controls: list[Any], frames: Optional[list[int]]) -> Iterator[None]:
    """For one call that holds only some frames of the video (a long video's segment or window), each ControlNet
    in ``controls``' chains whose hint batch has more than one image sees the hints of those ``frames`` (index
    modulo the batch, as ComfyUI tiles a short hint batch over a video); restored afterwards. ``None``: the call
    holds the whole video and nothing changes. One hint for all frames is never touched."""
    swapped = []
    try:
        if frames is not None:
            chains = {id(c): c for control in controls if control is not None for c in control_chain(control)}
            for c in chains.values():
                hint = getattr(c, "cond_hint_original", None)
                if torch.is_tensor(hint) and hint.shape[0] > 1:
                    index = torch.as_tensor(frames, device=hint.device) % hint.shape[0]
                    swapped.append((c, hint))
                    c.cond_hint_original, c.cond_hint = hint[index], None  # ComfyUI rebuilds cond_hint from it
        yield
    finally:
        for c, hint in swapped:
            c.cond_hint_original, c.cond_hint = hint, None


def control_output(control: Any, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                   videos: int) -> dict | None:
    """One ComfyUI ControlNet evaluation (``get_control``) on ``x`` (k-diffusion scale, frames on the batch axis)
    at ``sigma`` (one per batch entry) with text ``context`` (one per batch entry); ``videos`` = batched number."""
    return control.get_control(x, sigma, {"c_crossattn": context}, videos, {})
