"""Ethereum JSON-RPC over HTTP for the embedded L1 (hypercorn + trio).

``serve_l1(l1, host, port)`` serves an ``EmbeddedL1`` so that external tools
(web3.py ``HTTPProvider``/``WebSocketProvider``, cast, ethers) can use it like
anvil: HTTP POST and WebSocket on one port, JSON-RPC 2.0 single and batch
requests, hex quantities. Frames are bounded like the L2 port's
(``node.server.decode_frame``: size, nesting depth, batch length). Each request goes to
the chain's ``L1Provider.make_request`` (the EthereumTesterProvider that
``EmbeddedL1.w3`` uses) in a worker thread; parameters are converted from
JSON-RPC to eth-tester form with web3's eth-tester request formatters and
results back to JSON-RPC form (camelCase keys, 0x hex quantities and data).

``eth_sendTransaction`` without ``gas`` is sent with the gas estimate of the
pending state (plus 10% headroom), capped by the block gas limit.

Devnet methods: ``evm_mine`` / ``anvil_mine``, ``evm_increaseTime`` /
``anvil_increaseTime``, ``evm_setNextBlockTimestamp`` /
``anvil_setNextBlockTimestamp``, ``evm_setAutomine`` / ``anvil_setAutomine``.

Shutdown: cancelling the task that runs ``serve_l1`` closes the listening
socket and every open connection at once (hypercorn's graceful shutdown is
skipped under cancellation); it returns within milliseconds even with
keep-alive clients connected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from eth_utils import is_hex, is_string
from eth_utils.curried import apply_formatter_if
from web3._utils.formatters import apply_formatters_to_args, hex_to_integer
from web3.providers.eth_tester import middleware as tester_middleware

from l1_stub.chain import EmbeddedL1
from node.server import (
    FrameError,
    asgi_lifespan,
    decode_frame_async,
    limit_config,
    read_body,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8546

_ZERO_ADDRESS = "0x" + "00" * 20
_DEFAULT_BLOCK = {"eth_call": "latest", "eth_estimateGas": "pending",
                  "eth_createAccessList": "latest"}

# -------------------------------------------------------------- formatting


def _to_int_if_hex(value: Any) -> Any:
    if is_string(value) and is_hex(value):
        return hex_to_integer(value)
    return value


_block_param = apply_formatter_if(tester_middleware.is_not_named_block, _to_int_if_hex)

_TX_KEYS = {
    "type",
    "chain_id",
    "from",
    "to",
    "gas",
    "gas_price",
    "max_fee_per_gas",
    "max_priority_fee_per_gas",
    "value",
    "data",
    "access_list",
    "authorization_list",
    "nonce",
}


def _tx_request(default_from: str, tx: Any) -> Any:
    """A JSON-RPC transaction object as eth-tester wants it."""
    if not isinstance(tx, dict):
        return tx
    tx = dict(tx)
    if "input" in tx:
        data = tx.pop("input")
        tx.setdefault("data", data)
    tx.pop("type", None)  # eth-tester infers the type from the fee fields
    if tx.get("to") is None:
        tx.pop("to", None)
    tx = tester_middleware.transaction_request_transformer(tx)
    tx = {k: v for k, v in tx.items() if k in _TX_KEYS and v is not None}
    tx.setdefault("from", default_from)
    return tx


def _request_formatter(method: str, default_from: str) -> Callable[[Any], Any] | None:
    if method in ("eth_call", "eth_estimateGas", "eth_createAccessList"):
        return apply_formatters_to_args(partial(_tx_request, default_from), _block_param)
    if method == "eth_sendTransaction":
        return apply_formatters_to_args(partial(_tx_request, default_from))
    if method == "eth_getStorageAt":
        return apply_formatters_to_args(lambda a: a, _storage_slot, _block_param)
    return tester_middleware.request_formatters.get(method)  # type: ignore[arg-type]


def _storage_slot(value: Any) -> Any:
    # eth-tester wants a minimal hex string
    if isinstance(value, int):
        return hex(value)
    if is_string(value) and is_hex(value):
        return hex(int(value, 16))
    return value


def _hexify(value: Any, key: str | None = None) -> Any:
    """Ints to 0x quantities, bytes to 0x data, recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _hexify(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hexify(v) for v in value]
    return value


def _format_block(block: Any) -> Any:
    if isinstance(block, dict) and block.get("transactions"):
        txs = block["transactions"]
        if isinstance(txs[0], dict):
            block = dict(block)
            block["transactions"] = [_format_transaction(tx) for tx in txs]
    return block


def _format_transaction(tx: dict[str, Any]) -> dict[str, Any]:
    tx = tester_middleware.transaction_result_formatter(
        tester_middleware.transaction_result_remapper(tx)
    )
    if "y_parity" in tx:
        tx = {("yParity" if k == "y_parity" else k): v for k, v in tx.items()}
    return tx


def _format_result(method: str, result: Any) -> Any:
    if method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
        result = _format_block(result)
    elif method in (
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getTransactionByBlockNumberAndIndex",
    ) and isinstance(result, dict):
        result = _format_transaction(result)
    formatter = tester_middleware.result_formatters.get(method)  # type: ignore[union-attr]
    if formatter is not None:
        result = formatter(result)
    if method == "eth_getTransactionByHash" and isinstance(result, dict) and "y_parity" in result:
        result = {("yParity" if k == "y_parity" else k): v for k, v in result.items()}
    if method == "eth_getTransactionReceipt" and isinstance(result, dict):
        result = {k: v for k, v in result.items() if k != "state_root"}
    return _hexify(result)


# ------------------------------------------------------------- dispatching


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


def rpc_call(l1: EmbeddedL1, method: str, params: Any) -> dict[str, Any]:
    """Execute one JSON-RPC call against ``l1``; returns ``{"result": ..}``
    or ``{"error": ..}`` (no id)."""
    if params is None:
        params = []
    if not isinstance(params, list):
        return {"error": {"code": -32602, "message": "params must be an array"}}
    if method in _DEFAULT_BLOCK and len(params) == 1:  # the block tag is optional
        params = [*params, _DEFAULT_BLOCK[method]]
    default_from = l1.dev_accounts[0] if l1.dev_accounts else _ZERO_ADDRESS
    formatter = _request_formatter(method, default_from)
    try:
        if formatter is not None:
            params = formatter(params)
    except Exception as exc:  # noqa: BLE001 - bad client input
        return {"error": {"code": -32602, "message": f"invalid params: {exc}"}}
    if method == "eth_sendTransaction" and params and isinstance(params[0], dict):
        try:
            filled = _fill_transaction(l1, params[0])
        except Exception as exc:  # noqa: BLE001 - bad client input (eth-tester validation)
            return {"error": {"code": -32602, "message": f"invalid params: {exc}"}}
        if "error" in filled:
            return filled
        params = [filled["result"], *params[1:]]
    response = l1.provider.make_request(method, params)  # type: ignore[arg-type]
    if "error" in response:
        return {"error": dict(response["error"])}
    try:
        return {"result": _format_result(method, response.get("result"))}
    except Exception as exc:  # noqa: BLE001
        log.exception("formatting the result of %s failed", method)
        return {"error": {"code": -32603, "message": f"internal error: {exc}"}}


def _fill_transaction(l1: EmbeddedL1, tx: dict[str, Any]) -> dict[str, Any]:
    """An eth-tester transaction with ``nonce`` (the sender's pending count)
    and ``gas`` (the pending-state estimate + 10%) filled in when missing, as
    ``{"result": tx}``, or ``{"error": ..}`` when the estimate reverts."""
    tx = dict(tx)
    with l1.lock:  # estimate and send see the same pending block
        if "nonce" not in tx:
            tx["nonce"] = l1.tester.get_nonce(tx["from"], "pending")
        if "gas" not in tx:
            estimate = l1.provider.make_request(
                "eth_estimateGas", [tx, "pending"])  # type: ignore[arg-type]
            if "error" in estimate:
                return {"error": dict(estimate["error"])}
            tx["gas"] = _gas_with_headroom(l1, int(estimate["result"]), tx.get("data"))
    return {"result": tx}


def _gas_with_headroom(l1: EmbeddedL1, estimate: int, data: Any) -> int:
    """``estimate`` (raised to the EIP-7623 calldata floor, which py-evm's
    estimate leaves out) plus 10%, at most the pending block's gas limit."""
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) and data.startswith("0x") else b""
    zeros = raw.count(0)
    floor = 21_000 + 10 * (zeros + 4 * (len(raw) - zeros))
    with l1.lock:
        limit = int(l1.tester.get_block_by_number("pending")["gas_limit"])
    return min(max(estimate, floor) * 11 // 10, limit)


def _handle_one(l1: EmbeddedL1, request: Any) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return _error(None, -32600, "invalid request")
    request_id = request.get("id")
    is_notification = "id" not in request
    method = request.get("method")
    if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return _error(request_id, -32600, "invalid request")
    outcome = rpc_call(l1, method, request.get("params"))
    if is_notification:
        return None
    return {"jsonrpc": "2.0", "id": request_id, **outcome}


def handle_payload(l1: EmbeddedL1, payload: Any) -> Any:
    """A decoded JSON-RPC payload (one request or a batch) to the response
    object to send back, or None when nothing is to be sent."""
    if isinstance(payload, list):
        if not payload:
            return _error(None, -32600, "invalid request: empty batch")
        responses = [r for r in (_handle_one(l1, item) for item in payload) if r is not None]
        return responses or None
    return _handle_one(l1, payload)


# --------------------------------------------------------------------- ASGI

_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def make_app(l1: EmbeddedL1) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI application serving ``l1``."""

    async def respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + _CORS_HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await asgi_lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await websocket(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method == "OPTIONS":
            await respond(send, 204, b"", b"text/plain")
            return
        if method != "POST":
            await respond(send, 405, b"JSON-RPC endpoint: use POST\n", b"text/plain")
            return
        body = await read_body(receive)
        if body is None:
            return
        status, response = await handle_frame(body)
        if response is None:
            await respond(send, 204, b"", b"application/json")
            return
        await respond(send, status, json.dumps(response).encode(), b"application/json")

    async def handle_frame(raw: bytes | str | FrameError) -> tuple[int, Any]:
        """(HTTP status, response object or None) for one frame."""
        try:
            if isinstance(raw, FrameError):
                raise raw
            payload = await decode_frame_async(raw)
        except FrameError as exc:
            return exc.http_status, exc.response()
        return 200, await trio.to_thread.run_sync(handle_payload, l1, payload)

    async def websocket(receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            raw = text if text is not None else message.get("bytes") or b""
            _, response = await handle_frame(raw)
            if response is not None:
                await send({"type": "websocket.send", "text": json.dumps(response)})

    return app


async def serve_l1(
    l1: EmbeddedL1,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``l1`` as JSON-RPC over HTTP until cancelled.

    ``task_status.started(url)`` reports the bound URL (``port=0`` picks a
    free port), e.g. ``url = await nursery.start(serve_l1, l1, "127.0.0.1", 0)``.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75  # like the L2 port; hypercorn's 5 s races idle clients
    config.graceful_timeout = 1.0
    limit_config(config)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, make_app(l1), config, mode="asgi"))
        url = binds[0] if binds else f"http://{host}:{port}"
        log.info("L1 JSON-RPC listening on %s", url)
        task_status.started(url)
