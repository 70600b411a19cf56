"""ComfyUI node adapters for LAMP: thin classes that turn ComfyUI types into engine calls.

Every ComfyUI service goes through :mod:`nodes.host`. The training nodes live in ``nodes/train_nodes.py``
(optional here: if that module fails to import, the error is logged and the other nodes still load).
"""
from __future__ import annotations

import importlib
import logging

from . import host

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}


def _merge(module) -> None:
    NODE_CLASS_MAPPINGS.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))


host.register_lamp_folder()

from . import color_match, first_frame, invert_nodes, loader_nodes, metrics_node, native, sampler, shared_noise  # noqa: E402,E501

for _module in (loader_nodes, first_frame, shared_noise, sampler, color_match, invert_nodes, native, metrics_node):
    _merge(_module)

try:
    _train_nodes = importlib.import_module(".train_nodes", __name__)
except ModuleNotFoundError as e:  # not written yet / removed: nothing to merge
    if e.name != f"{__name__}.train_nodes":
        logging.getLogger("ComfyUI-LAMP").error("[LAMP] training nodes not loaded: %s", e)
except Exception as e:  # noqa: BLE001 - a broken optional module must not take the whole pack down
    logging.getLogger("ComfyUI-LAMP").exception("[LAMP] training nodes not loaded: %s", e)
else:
    _merge(_train_nodes)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "host"]
