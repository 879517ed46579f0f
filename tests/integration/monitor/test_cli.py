"""`featurewatch serve monitor` as a process: bad flags exit 2 with one line, SIGTERM is clean."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import pytest
from servers import free_port, wait_for_port
from trace_events import write_bundle

from featurewatch.stack import featurewatch_argv

pytestmark = pytest.mark.integration


def serve(redis_url: str, *args: str) -> list[str]:
    return featurewatch_argv("serve", "monitor", "--redis-url", redis_url, "--port=-1", *args)


def test_invalid_flags_file_exits_2_naming_file_and_field(redis_server, tmp_path):
    bundle = write_bundle(tmp_path / "b", "d1", 10)
    flags = tmp_path / "flags.yaml"
    flags.write_text("flags:\n  - {dictionary: d1, feature: 10, name: too far}\n")
    out = subprocess.run(serve(redis_server.url, "--dictionary", str(bundle), "--flags",
                               str(flags), "--metrics-port=-1"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert (f"error: flags file {flags}, flags[0]: feature 10 is out of range: dictionary 'd1' "
            "has d_sae=10") in out.stderr


def test_invalid_config_value_exits_2(redis_server, tmp_path):
    config = tmp_path / "fw.toml"
    config.write_text("[monitor]\nwindow_s = 99999\n")
    out = subprocess.run(serve(redis_server.url, "--config", str(config)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "monitor.window_s=99999 exceeds monitor.retention_s=3600" in out.stderr


def test_sigterm_stops_cleanly(redis_server, tmp_path):
    port = free_port()
    proc = subprocess.Popen(serve(redis_server.url, f"--metrics-port={port}", "--host",
                                  "127.0.0.1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert b"featurewatch_monitor_redis_up 1.0" in resp.read()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
