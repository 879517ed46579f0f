"""Load dashboards/build.py (a script, not a package) for tests: its panels and queries.

    build = load_build()
    for title, expr in build.panel_queries(dictionary=".*", rate_interval="1m"): ...
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DASHBOARDS = Path(__file__).parents[1] / "dashboards"


def load_build() -> ModuleType:
    name = "featurewatch_dashboard_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DASHBOARDS / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while building
        spec.loader.exec_module(module)
    return sys.modules[name]
