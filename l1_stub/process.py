"""The embedded L1 in its own process, as anvil and hardhat run (the node's
default since the L1's EVM work would otherwise share the node's GIL).

``L1Process`` starts ``python -m l1_stub`` (see ``l1_stub/__main__.py``) as a
child that serves an ``EmbeddedL1`` as JSON-RPC on ``host:port``, waits until
it answers, and offers the node the part of ``EmbeddedL1``'s interface the
node uses: ``w3`` (web3 over HTTP, one keep-alive session), ``head()``,
``mine()``, ``increase_time()``, ``set_next_block_timestamp()``,
``time_offset``, ``now()``, ``chain_id``, ``dev_keys``, ``dev_accounts``,
``datadir``, ``close()``.

Lifetime: the child exits when its stdin (a pipe from this process) closes
or its parent pid changes, so a node killed with SIGKILL leaves no orphan
holding the L1 datadir's LevelDB lock or the L1 port; a child that finds the
datadir still locked (an old child still exiting) retries for a few seconds.
``close()`` closes the pipe, then terminates (SIGTERM), then kills.

A child that dies while in use is reported as ``L1ProcessExited`` (a
RuntimeError naming its pid and exit code) by every later L1 call.

``time_offset`` (the L1 time warp, seconds) is cached: it is read from the
child at start, after every ``mine()`` (one batched request with the mining)
and after ``increase_time()``, so ``Node.clock()`` costs no RPC; a warp sent
to the L1 port by another client shows up at the next L1 block.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from l1_stub.chain import DEV_ACCOUNT_COUNT, DEV_HD_PATH, DEV_MNEMONIC, L1_CHAIN_ID

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

# read-only methods that are retried once on a dropped keep-alive connection
# (the server may close an idle connection just as a request goes out)
_RETRY_PREFIXES = ("eth_get", "eth_call", "eth_blockNumber", "eth_chainId", "eth_estimateGas",
                   "eth_accounts", "eth_gasPrice", "eth_feeHistory", "eth_maxPriorityFeePerGas",
                   "net_", "web3_", "derivnet_timeOffset")


class L1ProcessExited(RuntimeError):
    """The L1 child process is gone (``returncode`` as from ``Popen.poll``)."""

    def __init__(self, pid: int, returncode: int | None, detail: str = "") -> None:
        self.pid = pid
        self.returncode = returncode
        how = (f"was killed by signal {-returncode}" if returncode is not None and returncode < 0
               else f"exited with code {returncode}")
        super().__init__(f"the L1 process (pid {pid}) {how}" + (f": {detail}" if detail else "")
                         + "; its log is above (stderr of the node)")


class L1RpcError(RuntimeError):
    """A JSON-RPC error answered by the L1 process to a control call."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.code = int(error.get("code", 0))
        super().__init__(f"L1 {method}: {error.get('message')}")


class _ChildHTTPProvider(HTTPProvider):
    """HTTPProvider that names a dead child instead of a bare connection error
    and retries read-only calls once on a dropped keep-alive connection."""

    def __init__(self, owner: L1Process, url: str, session: requests.Session) -> None:
        super().__init__(url, session=session, request_kwargs={"timeout": 120})
        self._owner = owner

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except requests.ConnectionError:
            self._owner.check_alive()
            if not str(method).startswith(_RETRY_PREFIXES):
                raise
            return super().make_request(method, params)


def dev_keys(count: int = DEV_ACCOUNT_COUNT) -> tuple[bytes, ...]:
    """Private keys of the dev accounts the child creates (anvil's mnemonic)."""
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(DEV_MNEMONIC, "")
    return tuple(bytes(key_from_seed(seed, f"{DEV_HD_PATH}/{i}")) for i in range(count))


class L1Process:
    """An ``EmbeddedL1`` in a child process on ``host:port`` (see the module
    docstring). ``datadir`` None: in memory; else the chain's LevelDB
    directory (created or reopened). ``port=0`` picks a free port.
    ``extra_args`` are passed on to ``python -m l1_stub``.

    Raises L1ProcessExited if the child dies before it answers, TimeoutError
    if it does not answer within ``startup_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8546,
        datadir: str | os.PathLike[str] | None = None,
        chain_id: int = L1_CHAIN_ID,
        startup_timeout: float = 60.0,
        python: str = sys.executable,
        verbose: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if port == 0:
            port = _free_port(host)
        self.host = host
        self.port = port
        self._chain_id = chain_id
        self._datadir = os.fspath(datadir) if datadir is not None else None
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        self._startup_timeout = startup_timeout
        cmd = [python, "-m", "l1_stub", "--host", host, "--port", str(port),
               "--chain-id", str(chain_id), "--exit-with-parent"]
        if self._datadir is not None:
            cmd += ["--datadir", self._datadir]
        if verbose:
            cmd.append("--verbose")
        cmd += list(extra_args)  # more ``python -m l1_stub`` flags
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if "ETH_HASH_BACKEND" not in env and importlib.util.find_spec("sha3") is not None:
            env["ETH_HASH_BACKEND"] = "pysha3"  # py-evm's keccak: the C one (eth-hash picks pycryptodome)
        self._cmd, self._env = cmd, env
        # stdout/stderr are the node's (its log); stdin is the lifeline pipe
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
        self.pid = self.proc.pid
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._offset = 0
        self._w3 = Web3(_ChildHTTPProvider(self, self.url, self._session))
        self._dev_keys = dev_keys()
        try:
            self._wait_ready(startup_timeout)
            self._offset = int(self._rpc("derivnet_timeOffset"), 16)
        except BaseException:
            self.close()
            raise

    # -- child ---------------------------------------------------------

    def restart(self) -> None:
        """Start a new child on the same port and datadir after the old one
        exited (killed, crashed). The chain reopens from the datadir, with
        every mined block; transactions that were pending in the old child
        are gone and must be sent again.

        Raises RuntimeError for an in-memory L1 (its chain died with the
        child) or a child that is still running; L1ProcessExited or
        TimeoutError as the constructor does.
        """
        if self._datadir is None:
            raise RuntimeError("an in-memory L1 cannot be restarted: its chain died with "
                               f"the process (pid {self.pid})")
        if self._closed:
            raise RuntimeError("the L1 process was closed")
        if self.proc.poll() is None:
            raise RuntimeError(f"the L1 process (pid {self.pid}) is still running")
        self._session.close()  # drop keep-alive connections to the dead child
        self.proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, env=self._env)
        self.pid = self.proc.pid
        self._wait_ready(self._startup_timeout)
        self._offset = int(self._rpc("derivnet_timeOffset"), 16)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:  # another server may hold the port until our child can bind it
                if int(self._rpc("derivnet_pid", timeout=2.0), 16) == self.pid:
                    return
            except (requests.RequestException, ValueError, L1RpcError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the L1 process (pid {self.pid}) did not answer on "
                                   f"{self.url} within {timeout} s")
            time.sleep(0.05)

    def check_alive(self) -> None:
        """Raise L1ProcessExited if the child has exited."""
        code = self.proc.poll()
        if code is not None:
            raise L1ProcessExited(self.pid, code)

    def _post(self, payload: Any, timeout: float) -> Any:
        try:
            r = self._session.post(self.url, data=json.dumps(payload),
                                   headers={"content-type": "application/json"}, timeout=timeout)
        except requests.ConnectionError:
            self.check_alive()
            raise
        r.raise_for_status()
        return r.json()

    def _rpc(self, method: str, *params: Any, timeout: float = 120.0) -> Any:
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                            "params": list(params)}, timeout)
        if "error" in reply:
            raise L1RpcError(method, reply["error"])
        return reply["result"]

    def _batch(self, calls: list[tuple[str, list[Any]]], timeout: float = 120.0) -> list[Any]:
        first = next(self._ids)
        for _ in range(len(calls) - 1):
            next(self._ids)
        replies = self._post([{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p}
                              for i, (m, p) in enumerate(calls)], timeout)
        by_id = {r.get("id"): r for r in replies}
        out = []
        for i, (method, _) in enumerate(calls):
            r = by_id[first + i]
            if "error" in r:
                raise L1RpcError(method, r["error"])
            out.append(r["result"])
        return out

    # -- EmbeddedL1's interface (as the node uses it) ------------------

    @property
    def w3(self) -> Web3:
        """web3.Web3 over HTTP to the child (one keep-alive session)."""
        return self._w3

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def datadir(self) -> str | None:
        return self._datadir

    @property
    def dev_keys(self) -> tuple[bytes, ...]:
        """32-byte private keys of the dev accounts (anvil's order)."""
        return self._dev_keys

    @property
    def dev_accounts(self) -> tuple[str, ...]:
        from eth_account import Account

        return tuple(Account.from_key(k).address for k in self._dev_keys)

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks (``anvil_mine``); returns the new head number.
        Also refreshes ``time_offset``."""
        if blocks < 1:
            raise ValueError("blocks must be >= 1")
        _, number, offset = self._batch([("anvil_mine", [hex(blocks)]),
                                         ("eth_blockNumber", []),
                                         ("derivnet_timeOffset", [])])
        self._offset = int(offset, 16)
        return int(number, 16)

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the latest mined block."""
        block = self._rpc("eth_getBlockByNumber", "latest", False)
        return int(block["number"], 16), int(block["timestamp"], 16)

    def increase_time(self, seconds: int) -> int:
        """``evm_increaseTime``: shift the clock of the next blocks by
        ``seconds``; returns the total offset (seconds). ValueError (as
        EmbeddedL1.increase_time) for a negative warp or one the L1 refuses
        as invalid params (L1 time beyond 2^32 - 1)."""
        if seconds < 0:
            raise ValueError("cannot move time backwards")
        try:
            self._offset = int(self._rpc("evm_increaseTime", hex(int(seconds))), 16)
        except L1RpcError as exc:
            if exc.code == -32602:
                raise ValueError(str(exc).removeprefix("L1 evm_increaseTime: ")) from None
            raise
        return self._offset

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """``evm_setNextBlockTimestamp``: the next block gets ``timestamp``."""
        self._rpc("evm_setNextBlockTimestamp", hex(int(timestamp)))

    @property
    def time_offset(self) -> int:
        """The L1 time warp in seconds (cached; see the module docstring)."""
        return self._offset

    def now(self) -> int:
        """The chain's notion of now: wall time plus the warp offset."""
        return int(time.time()) + self._offset

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child: close its stdin (it shuts down and releases the
        datadir), then SIGTERM, then SIGKILL. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._session.close()
        proc = self.proc
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for step in (proc.terminate, proc.kill):
            try:
                proc.wait(timeout=timeout / 2)
                return
            except subprocess.TimeoutExpired:
                log.warning("L1 process %d did not exit; sending %s", self.pid, step.__name__)
                step()
        proc.wait(timeout=timeout)

    def __enter__(self) -> L1Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["L1Process", "L1ProcessExited", "L1RpcError", "dev_keys"]
