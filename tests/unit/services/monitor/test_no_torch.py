"""The monitor runs in a small image: none of its modules may import torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import featurewatch.services.monitor as monitor


def test_monitor_modules_do_not_import_torch():
    modules = sorted(f"featurewatch.services.monitor.{m.name}"
                     for m in pkgutil.iter_modules(monitor.__path__))
    assert {"featurewatch.services.monitor.server", "featurewatch.services.monitor.cli",
            "featurewatch.services.monitor.bench"} <= set(modules)
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "from featurewatch.cli import cli\n"
            "cli.get_command(None, 'alerts')\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False", out.stderr
