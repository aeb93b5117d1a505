"""An ``adrank serve*`` command in a subprocess on port 0, for the servers' CLI tests."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ServeCli:
    """``python -m adrank COMMAND --port 0 --port-file ... ARGS`` until stopped.

    Args:
        tmp: Directory for the port file.
        command: ``serve-features``, ``serve-embeddings`` or ``serve``.
        args: The command's other arguments.
        start_timeout_s: How long the interpreter may take to import, load and bind.
    """

    def __init__(self, tmp: Path, command: str, *args: str, start_timeout_s: float = 120.0) -> None:
        self.port_file = tmp / "port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adrank", command, "--port", "0"]
            + ["--port-file", str(self.port_file), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(int(start_timeout_s / 0.05)):
            if self.port_file.exists() or self.proc.poll() is not None:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.05)
        if not self.port_file.exists():
            _, err = self.stop(signal.SIGKILL)
            raise AssertionError(f"server did not start (exit {self.proc.returncode}):\n{err}")
        self.port = int(self.port_file.read_text())

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[str, str]:
        """Send ``sig`` (if still running) and return its ``(stdout, stderr)``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        return out, err
