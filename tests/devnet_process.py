"""Run a real ``derivnet devnet`` in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TAPE = ROOT.parent / "shared" / "data" / "ethusdt-trades-2023-02-02.csv"


def l1_lead(w3: Any) -> int:
    """Seconds the L1 head's timestamp runs ahead of the wall clock (0 if
    behind). After a burst of L1 blocks, each at least a second after its
    parent, the L1 clock leads: a warp of ``n`` s then moves the next L1
    block only ``n - lead`` s past the head. Call before any warp."""
    return max(0, int(w3.eth.get_block("latest")["timestamp"]) - int(time.time()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C ``proc`` and wait for it; kill it if it has not exited 10 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

class DevnetProcess:
    """``python -m node.cli devnet`` on free ports; fast clocks for tests."""

    def __init__(self, datadir: Path | None, log: Path, **flags: str | None) -> None:
        self.datadir = datadir
        self.log_path = log
        self.port = free_port()
        self.l1_port = free_port()
        self.flags = {"--block-time": "0.1", "--batch-interval": "0.5",
                      "--l1-block-time": "1", **flags}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def l1_url(self) -> str:
        return f"http://127.0.0.1:{self.l1_port}"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "node.cli", "devnet", "--port", str(self.port),
               "--l1-port", str(self.l1_port)]
        if self.datadir is not None:
            cmd += ["--datadir", str(self.datadir)]
        for k, v in self.flags.items():
            cmd += [k] if v is None else [k, v]  # None: a flag without a value
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:  # one client: each new one loads the CA certs
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self._log.close()
                    raise RuntimeError(f"devnet exited early:\n{self.log_path.read_text()}")
                try:
                    http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                              "params": []})
                    return
                except httpx.HTTPError:
                    time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"devnet did not answer in {timeout} s:\n{self.log_path.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self._log.close()
