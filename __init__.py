"""ComfyUI-LAMP: ComfyUI entry point. ComfyUI imports this package and reads the node maps below.

The engine package ``lamp_model`` sits next to this file and is imported by absolute name (it is also used
from the command line), so the pack folder is appended to ``sys.path`` when the engine is not importable yet.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.append(_here)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

#: The frontend extension that shows node warnings and reports on the node (web/lamp_messages.js).
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
