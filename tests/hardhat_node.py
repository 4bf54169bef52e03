"""A hardhat node from npm as an external L1 for tests (``--l1-rpc``).

``install()`` puts ``hardhat@HARDHAT_VERSION`` into a cache directory outside
the repository (``$DERIVNET_HARDHAT_CACHE``, default
``~/.cache/derivnet-hardhat/<version>``) once, with a ``hardhat.config.js``
that gives the chain id genesis expects (900). ``HardhatNode`` starts
``hardhat node`` there on a free port and stops it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.devnet_process import free_port, stop_process

HARDHAT_VERSION = "2.22.19"
L1_CHAIN_ID = 900
CONFIG_JS = ("// written by derivnet's tests (tests/hardhat_node.py)\n"
             f"module.exports = {{ networks: {{ hardhat: {{ chainId: {L1_CHAIN_ID} }} }} }};\n")


class HardhatUnavailable(RuntimeError):
    """hardhat cannot be installed here (no npm, or npm cannot reach its registry)."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "derivnet-hardhat" / HARDHAT_VERSION
    return Path(os.environ.get("DERIVNET_HARDHAT_CACHE", default))


def install(timeout: float = 600.0) -> Path:
    """The directory holding hardhat@HARDHAT_VERSION (installed on first use).
    Raises HardhatUnavailable if npm is missing or cannot reach its registry,
    RuntimeError for any other npm failure. Concurrent test runs wait for
    one another's install (a lock file in the cache)."""
    home = cache_dir()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install(home, timeout)


def _install(home: Path, timeout: float) -> Path:
    binary = home / "node_modules" / ".bin" / "hardhat"
    config = home / "hardhat.config.js"
    if not config.exists() or config.read_text() != CONFIG_JS:
        config.write_text(CONFIG_JS)
    if binary.exists():
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise HardhatUnavailable("npm is not installed")
    if not (home / "package.json").exists():
        (home / "package.json").write_text(json.dumps({"name": "derivnet-hardhat",
                                                       "private": True}))
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--save-exact",
                           f"hardhat@{HARDHAT_VERSION}"], cwd=home, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        text = done.stderr + done.stdout
        if any(s in text for s in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT",
                                   "ECONNRESET", "network")):
            raise HardhatUnavailable(f"npm cannot reach its registry: {text.strip()[-300:]}")
        raise RuntimeError(f"npm install hardhat@{HARDHAT_VERSION} failed:\n{text}")
    return home


class HardhatNode:
    """``hardhat node`` on a free port (chain 900, automine, the default
    "test test ... junk" accounts with 10,000 ether each)."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home = home
        self.port = free_port()
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ, HARDHAT_DISABLE_TELEMETRY_PROMPT="true")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(self.home / "node_modules" / ".bin" / "hardhat"), "node",
             "--hostname", "127.0.0.1", "--port", str(self.port)],
            cwd=self.home, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self._log.close()
                    raise RuntimeError(f"hardhat exited early:\n{self.log_path.read_text()}")
                try:
                    http.post(self.url, json={"jsonrpc": "2.0", "id": 1,
                                              "method": "eth_chainId", "params": []})
                    return
                except httpx.HTTPError:
                    time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"hardhat did not answer in {timeout} s")

    def call(self, method: str, *params: object) -> object:
        """One JSON-RPC call to the node; RuntimeError for an error answer."""
        reply = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                           "params": list(params)}, timeout=30).json()
        if "error" in reply:
            raise RuntimeError(f"hardhat {method}: {reply['error']}")
        return reply["result"]

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self._log.close()
        self.proc = None
