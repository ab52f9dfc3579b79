"""The tools, one module each: a module that defines ``TOOL`` is registered, nothing else to edit.

A new tool is a new module here with an ``Arguments`` model (its input schema and validation),
a result model, a description and a ``run`` handler, exported as ``TOOL = Tool(...)``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from cte1_mcp.tools.base import Tool


def discover() -> dict[str, Tool[Any]]:
    """Every ``TOOL`` of this package's modules, by name, in module-name order."""
    tools: dict[str, Tool[Any]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        tool = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TOOL", None)
        if isinstance(tool, Tool):
            if tool.name in tools:
                raise RuntimeError(f"two tool modules define {tool.name}")
            tools[tool.name] = tool
    return tools
