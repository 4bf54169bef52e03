"""Any Ethereum node as the L1 (``derivnet devnet --l1-rpc URL``): hardhat,
anvil, or any node that speaks the standard JSON-RPC.

``ExternalL1`` offers the node the same interface as ``EmbeddedL1`` and
``L1Process`` (``w3``, ``head()``, ``mine()``, ``increase_time()``,
``time_offset``, ``now()``, ``chain_id``, ``dev_keys``, ``dev_accounts``,
``datadir``, ``close()``) over an HTTP URL, plus ``tick()``, the node's L1
clock step:

- mining: ``mine(n)`` mines now (``hardhat_mine`` / ``anvil_mine`` when the
  node has them, else ``evm_mine`` n times). ``tick()`` mines one block when
  the node is in manual-mining mode (``hardhat_getAutomine`` /
  ``anvil_getAutomine`` answer false) and otherwise only reads the head: an
  automining node makes a block per transaction (the batches, deposits and
  finalizations themselves), and a node without these methods (geth, a
  testnet) makes its own blocks; derivnet's own L1 (``derivnet l1``) is
  mined on every tick.
- time: the L2 follows the node's time. ``time_offset`` (seconds) is the
  node's clock minus the wall clock, read from the head block's timestamp
  after each ``tick()`` / ``mine()`` and raised by every ``increase_time()``
  (``evm_increaseTime``), so ``Node.clock()`` costs no RPC; a warp sent
  to the node by another client shows at its next block.
- a node without ``evm_increaseTime`` / ``evm_mine`` answers a warp or a
  mine with ``L1MethodMissing``, a JSON-RPC error (-32601) that names the
  method and the node (the L2's ``devnet_increaseTime`` and ``devnet_mine``
  pass it on); a node that has the method but refuses the call gives
  ``L1ControlRefused`` (-32000, with the node's answer).
- keys: ``key`` (the deployer and sequencer key, ``--l1-key``), else the
  anvil/hardhat dev accounts (mnemonic "test test ... junk"), which both
  fund with 10,000 ether.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import requests
from jsonrpcserver.exceptions import JsonRpcError
from web3 import Web3

from l1_stub.client import Deployment, _stale_connection_retry
from l1_stub.process import dev_keys as anvil_dev_keys

log = logging.getLogger(__name__)

METHOD_NOT_FOUND = -32601


class L1NodeError(RuntimeError):
    """A JSON-RPC error answered by the external node (``code``, ``method``)."""

    def __init__(self, url: str, method: str, error: dict[str, Any]) -> None:
        self.code = int(error.get("code", 0))
        self.method = method
        super().__init__(f"L1 node {url}: {method}: {error.get('message')}")


class L1ControlError(JsonRpcError):
    """A devnet control the external node cannot carry out: a JSON-RPC
    error (``code``, ``message``) the L2 port answers as is."""

    def __str__(self) -> str:
        return str(self.message)


class L1MethodMissing(L1ControlError):
    """The external node lacks a method a devnet control needs (JSON-RPC
    -32601 on the L2 port, naming the method and the node)."""

    def __init__(self, url: str, method: str, answer: str) -> None:
        self.method = method
        super().__init__(METHOD_NOT_FOUND,
                         f"the L1 node at {url} has no {method} ({answer}): time warps and "
                         "mining on demand need a dev node such as anvil or hardhat")


class L1ControlRefused(L1ControlError):
    """The external node has the control method but refused this call (e.g.
    a derivnet L1 run with --no-devnet-controls): JSON-RPC -32000 naming the
    method, the node and its answer."""

    def __init__(self, url: str, method: str, answer: str) -> None:
        self.method = method
        super().__init__(-32000, f"the L1 node at {url} refused {method}: {answer}")


def _missing(error: dict[str, Any]) -> bool:
    """True for a node's "no such method" answer (-32601, or hardhat's and
    geth's wordings under another code)."""
    text = str(error.get("message", "")).lower()
    return (int(error.get("code", 0)) == METHOD_NOT_FOUND or "not supported" in text
            or "does not exist" in text or "not found" in text or "not available" in text)


class ExternalL1:
    """An Ethereum node at ``url`` as the devnet's L1 (see the module
    docstring). ``chain_id`` is the chain id genesis expects (l1ChainId);
    ``key`` the 32-byte deployer/sequencer key (None: the dev accounts).

    Raises ValueError if the node answers a different chain id, ConnectionError
    if nothing answers at ``url`` (or not JSON-RPC).
    """

    def __init__(self, url: str, *, chain_id: int, key: bytes | None = None,
                 timeout: float = 60.0) -> None:
        self.url = url
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(max_retries=_stale_connection_retry(),
                                                pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._w3 = Web3(Web3.HTTPProvider(url, session=self._session,
                                          request_kwargs={"timeout": timeout}))
        try:
            answered = int(self._rpc("eth_chainId"), 16)
        except requests.RequestException as exc:
            self._session.close()
            raise ConnectionError(f"no Ethereum node answering at {url}: {exc}") from None
        if answered != chain_id:
            self._session.close()
            raise ValueError(f"the L1 node at {url} is chain {answered}, but genesis expects "
                             f"l1ChainId {chain_id} (start it with that chain id, e.g. "
                             f"`anvil --chain-id {chain_id}`)")
        self._chain_id = chain_id
        self._dev_keys = (key,) if key is not None else anvil_dev_keys()
        self.client_version = str(self._call_or_none("web3_clientVersion") or "")
        flavour = self.client_version.split("/")[0].lower()
        self._prefix = ("hardhat" if flavour.startswith("hardhat")
                        else "anvil" if flavour.startswith("anvil") else None)
        # derivnet's own L1 (`derivnet l1`) mines only when asked (or on its
        # --block-time); it has no automine getter
        self._manual = flavour.startswith("derivnet-l1")
        self._warp = 0
        self._offset = 0
        self._refresh_offset()

    # -- JSON-RPC --------------------------------------------------------

    def _post(self, method: str, params: list[Any]) -> dict[str, Any]:
        r = self._session.post(self.url, timeout=self._timeout,
                               data=json.dumps({"jsonrpc": "2.0", "id": next(self._ids),
                                                "method": method, "params": params}),
                               headers={"content-type": "application/json"})
        r.raise_for_status()
        reply: dict[str, Any] = r.json()
        return reply

    def _rpc(self, method: str, *params: Any) -> Any:
        """The result, or L1NodeError for the node's error answer."""
        reply = self._post(method, list(params))
        if "error" in reply:
            raise L1NodeError(self.url, method, reply["error"])
        return reply.get("result")

    def _control(self, method: str, *params: Any) -> Any:
        """A dev-node control: L1MethodMissing if the node has no ``method``,
        L1ControlRefused for any other error answer."""
        reply = self._post(method, list(params))
        error = reply.get("error")
        if error is not None:
            if _missing(error):
                raise L1MethodMissing(self.url, method, str(error.get("message")))
            raise L1ControlRefused(self.url, method, str(error.get("message")))
        return reply.get("result")

    def _call_or_none(self, method: str, *params: Any) -> Any:
        reply = self._post(method, list(params))
        return None if "error" in reply else reply.get("result")

    def _refresh_offset(self) -> int:
        """Read the head; the offset follows its timestamp, never below the
        warps sent through this object. Returns the head number."""
        number, timestamp = self.head()
        self._offset = max(self._warp, timestamp - int(time.time()))
        return number

    # -- EmbeddedL1's interface (as the node uses it) ------------------

    @property
    def w3(self) -> Web3:
        """web3.Web3 over HTTP to the node (one keep-alive session)."""
        return self._w3

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def datadir(self) -> str | None:
        return None  # the node keeps its own chain

    @property
    def dev_keys(self) -> tuple[bytes, ...]:
        """32-byte private keys the devnet signs L1 transactions with."""
        return self._dev_keys

    @property
    def dev_accounts(self) -> tuple[str, ...]:
        from eth_account import Account

        return tuple(Account.from_key(k).address for k in self._dev_keys)

    def automine(self) -> bool:
        """Whether the node mines a block per transaction (True when it
        cannot say: a node without the getter makes its own blocks; False
        for derivnet's own L1)."""
        if self._manual:
            return False
        if self._prefix is None:
            return True
        return bool(self._call_or_none(f"{self._prefix}_getAutomine") is not False)

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks now; returns the new head number.
        L1MethodMissing if the node cannot mine on demand."""
        if blocks < 1:
            raise ValueError("blocks must be >= 1")
        if self._prefix is not None and blocks > 1:
            self._control(f"{self._prefix}_mine", hex(blocks))
        else:
            for _ in range(blocks):
                self._control("evm_mine")
        return self._refresh_offset()

    def tick(self) -> int:
        """The node's L1 clock step: mine one block if the node is in
        manual-mining mode, else just read the head. Returns the head number."""
        if not self.automine():
            return self.mine(1)
        return self._refresh_offset()

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block."""
        block = self._rpc("eth_getBlockByNumber", "latest", False)
        return int(block["number"], 16), int(block["timestamp"], 16)

    def increase_time(self, seconds: int) -> int:
        """``evm_increaseTime``: shift the clock of the next blocks by
        ``seconds``; returns the total offset (seconds). ValueError for a
        negative warp, L1MethodMissing if the node has no evm_increaseTime."""
        if seconds < 0:
            raise ValueError("cannot move time backwards")
        if int(time.time()) + self._offset + seconds > 2**32 - 1:
            raise ValueError("seconds: the warp would put L1 time beyond 2^32 - 1")
        self._control("evm_increaseTime", hex(int(seconds)))
        self._warp = self._offset + int(seconds)
        self._offset = self._warp
        return self._offset

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """``evm_setNextBlockTimestamp``: the next block gets ``timestamp``."""
        self._control("evm_setNextBlockTimestamp", hex(int(timestamp)))

    @property
    def time_offset(self) -> int:
        """The node's clock minus the wall clock, seconds (cached)."""
        return self._offset

    def now(self) -> int:
        """The chain's notion of now: wall time plus the offset."""
        return int(time.time()) + self._offset

    def close(self) -> None:
        """Close the HTTP session (the node itself keeps running)."""
        self._session.close()

    def __enter__(self) -> ExternalL1:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def attach(w3: Web3, rollup: str, *, sequencer: str, genesis_state_root: bytes,
           l2_chain_id: int, requested: Mapping[str, int | None]) -> tuple[Deployment,
                                                                            dict[str, int]]:
    """The deployment of a Rollup already on the L1 node (``--l1-rollup``),
    for a new L2 store: (Deployment with its USDC, DisputeGame and deployment
    block, settlement windows and dispute parameters read from the
    contracts, keyed as ``l1_stub.client.deploy``'s arguments).

    Raises ValueError if there is no contract at ``rollup``, if its
    sequencer, genesis state root or L2 chain id differ from genesis', if it
    already holds batches (that chain must be derived: ``derivnet
    replica``), or if a value in ``requested`` (a flag given, not None)
    differs from the contract's."""
    from dataclasses import asdict

    from eth_utils import to_checksum_address

    from l1_stub.client import RollupClient
    from l1_stub.contracts import load_contract
    from node.replica import deploy_block_of

    address = to_checksum_address(rollup)
    if not w3.eth.get_code(address):
        raise ValueError(f"--l1-rollup: no contract at {address} on the L1 node")
    raw = w3.eth.contract(address=address, abi=load_contract("Rollup")[0]).functions
    deployment = Deployment(to_checksum_address(raw.usdc().call()), address,
                            deploy_block_of(w3, address, int(w3.eth.block_number)),
                            int(w3.eth.chain_id), to_checksum_address(raw.dispute_game().call()))
    client = RollupClient(w3, deployment)
    checks = (("sequencer", client.sequencer().lower(), sequencer.lower()),
              ("genesis state root", "0x" + client.genesis_state_root().hex(),
               "0x" + genesis_state_root.hex()),
              ("L2 chain id", client.l2_chain_id(), l2_chain_id))
    for name, on_l1, ours in checks:
        if on_l1 != ours:
            raise ValueError(f"--l1-rollup {address}: its {name} is {on_l1}, genesis gives "
                             f"{ours}")
    count = client.batch_count()
    if count:
        raise ValueError(f"--l1-rollup {address} holds {count} batches: a new L2 store can "
                         "only start a Rollup without batches (derive that chain with "
                         "`derivnet replica`, or restart with the --datadir that made it)")
    windows = {k: int(v) for k, v in asdict(client.windows()).items()}
    for key, value in requested.items():
        if key in windows and value is not None and int(value) != windows[key]:
            raise ValueError(f"--{key.replace('_', '-')} {value} differs from the Rollup's "
                             f"{windows[key]} (--l1-rollup {address})")
    return deployment, windows


__all__ = ["ExternalL1", "L1ControlError", "L1ControlRefused", "L1MethodMissing", "L1NodeError",
           "attach"]
