"""A real llama.cpp OpenAI-compatible server (llama-cpp-python's) for judge tests, started and stopped here.

``LlamaServer(gguf)`` runs ``python -m llama_cpp.server --model GGUF --host 127.0.0.1 --port <free port>`` in a
subprocess, waits until ``/v1/models`` answers (or the process dies, whose log is then in the error), and
terminates it on exit. ``.ci/run`` installs ``llama-cpp-python[server]`` (``make judge-server-deps``), so
these tests are skipped only where ``llama_cpp`` is not installed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """Context manager; ``base_url`` for an OpenAI client, ``model`` is the id the server lists."""

    def __init__(self, gguf: Path, *, n_ctx: int = 2048, startup_s: float = 180.0) -> None:
        self.gguf, self.n_ctx, self.startup_s = Path(gguf), n_ctx, startup_s
        self.port = free_port()
        self.model = str(self.gguf)  # llama-cpp-python lists the model under its path (no alias given)
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__, read by output()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LlamaServer:
        # llama.cpp's threads spin at barriers: on a small shared machine one thread is fastest
        threads = str(max(1, min(4, (os.cpu_count() or 1) // 2)))
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", threads, "--verbose", "False",
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self._proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"llama_cpp.server did not answer within {self.startup_s} s:\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
