"""`zreward serve` command line: argument checks (fast) and a real subprocess with SIGTERM shutdown (slow)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from serve_helpers import b64, get, png_bytes, post

from zreward.serve.serve_cli import main, read_token_file


def test_token_file_and_flag_checks(tmp_path, capsys):
    (tmp_path / "tok").write_text("  abc123\n")
    assert read_token_file(tmp_path / "tok") == "abc123"
    (tmp_path / "empty").write_text("\n")
    for bad, msg in [(tmp_path / "empty", "expected one non-empty token"), (tmp_path / "nope", "cannot read it")]:
        with pytest.raises(ValueError, match=msg):
            read_token_file(bad)
    for argv, msg in [(["--model", "m", "--token-file", str(tmp_path / "empty")], "non-empty token"),
                      (["--model", "m", "--max-batch", "0"], "--max-batch"),
                      (["--model", "m", "--allowed-root", str(tmp_path / "missing")], "existing directory")]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.slow
def test_subprocess_serves_and_shuts_down_gracefully_on_sigterm(tiny_model, tmp_path):
    (tmp_path / "tok").write_text("tok\n")
    proc = subprocess.Popen([sys.executable, "-m", "zreward.cli", "serve", "--model", str(tiny_model),
                             "--port", "0", "--token-file", str(tmp_path / "tok"), "--max-wait-ms", "1500",
                             "--log-level", "warning"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("zreward serve: listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        auth = {"Authorization": "Bearer tok"}
        assert get(url, "/health") == (200, {"status": "ok"})
        out = {}
        body = {"prompts": ["a red circle"], "images": [b64(png_bytes(0))]}
        t = threading.Thread(target=lambda: out.update(r=post(url, "/score", body, auth)))
        t.start()
        time.sleep(0.5)  # the request now waits in the batcher (max-wait 1.5 s)
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert out["r"][0] == 200 and len(out["r"][1]["results"]) == 1
        # uvicorn re-raises the captured SIGTERM once shutdown has completed: exit by that signal (or 0)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
