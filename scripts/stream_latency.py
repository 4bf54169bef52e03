"""Stream latency: N WebSocket subscribers, p99 delay from block seal to receipt.

Starts a devnet process on free ports (or uses ``--rpc``), connects
``--subscribers`` plain WebSocket clients to the ``blocks`` channel (with
``--all-channels`` also to ``orderbook`` and ``trades``), replays
``--limit`` trades of the shared tape in another process (``derivnet
replay``) to make blocks, and reports, from every ``blocks`` update, the
delay from the node's ``sealedAt`` (ms, set when the block is sealed) to the
client's receipt. With ``--stalled K`` it also connects K consumers that
subscribe and never read, and reports the block cadence (intervals between
``sealedAt`` of consecutive blocks) so the two runs can be compared.

    .venv/bin/python scripts/stream_latency.py --subscribers 100 --limit 2000
    .venv/bin/python scripts/stream_latency.py --subscribers 100 --stalled 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TAPE = ROOT.parent / "shared" / "data" / "ethusdt-trades-2023-02-02.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_devnet(block_time: float, log: Path, buffer: int | None = None
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """A devnet process on free ports; ``buffer``: its per-connection stream
    bound ($DERIVNET_STREAM_BUFFER; None: the default, geth's 10,000)."""
    import httpx

    port, l1_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "node.cli", "devnet", "--port", str(port), "--l1-port",
           str(l1_port), "--block-time", str(block_time)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if buffer is not None:
        env["DERIVNET_STREAM_BUFFER"] = str(buffer)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"devnet exited: {log.read_text()}")
        try:
            httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                  "params": []}, timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError("devnet did not start")


def stalled_consumer(port: int) -> socket.socket:
    """Subscribe to blocks, orderbook and trades, then never read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:  # frames before the 101 would be refused
        head += s.recv(1)
    for i, (ch, p) in enumerate([("blocks", {}), ("orderbook", {"market": "ETH-USD"}),
                                 ("trades", {"market": "ETH-USD"})]):
        data = json.dumps({"jsonrpc": "2.0", "id": i, "method": "l2_subscribe",
                           "params": [ch, p]}).encode()
        s.sendall(bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data)
    return s


class Subscribers:
    """``count`` WebSocket subscribers served by one thread (one selector loop
    over their sockets, websockets' sans-I/O client protocol, offering
    permessage-deflate as websockets' client does). A notification's receipt
    time is taken when its bytes are read from the socket, before any
    WebSocket or JSON parsing, so the figure is the node's delivery and not
    this client's parsing queue."""

    def __init__(self, ws_url: str, count: int, all_channels: bool) -> None:
        self.ws_url = ws_url
        self.count = count
        self.channels: list[tuple[str, dict[str, Any]]] = [("blocks", {})]
        if all_channels:
            self.channels += [("orderbook", {"market": "ETH-USD"}),
                              ("trades", {"market": "ETH-USD"})]
        self.delays: list[float] = []  # ms
        self.sealed: dict[int, int] = {}  # block -> sealedAt ms
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self._stop = threading.Event()

    def close(self) -> None:
        """Stop the loop (from another thread); it closes every connection."""
        self._stop.set()

    def _connect(self) -> tuple[socket.socket, Any]:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
        from websockets.http11 import Response
        from websockets.uri import parse_uri

        uri = parse_uri(self.ws_url)
        protocol = ClientProtocol(uri, extensions=enable_client_permessage_deflate(None),
                                  max_size=None)
        sock = socket.create_connection((uri.host, uri.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol.send_request(protocol.connect())
        sock.sendall(b"".join(protocol.data_to_send()))
        while not any(isinstance(e, Response) for e in protocol.events_received()):
            data = sock.recv(1 << 16)
            if not data:
                raise RuntimeError("the node closed a subscriber during the handshake")
            protocol.receive_data(data)
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        for j, (ch, p) in enumerate(self.channels):
            protocol.send_text(json.dumps({"jsonrpc": "2.0", "id": j, "method": "l2_subscribe",
                                           "params": [ch, p]}).encode())
        sock.sendall(b"".join(protocol.data_to_send()))
        sock.setblocking(False)
        return sock, protocol

    def _main(self) -> None:
        import selectors

        from websockets.frames import Opcode

        selector = selectors.DefaultSelector()
        for _ in range(self.count):
            sock, protocol = self._connect()
            selector.register(sock, selectors.EVENT_READ, protocol)
        self.connected.set()
        while not self._stop.is_set():
            for key, _ in selector.select(0.2):
                sock, protocol = key.fileobj, key.data
                try:
                    data = sock.recv(1 << 16)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                now = time.time() * 1000  # the receipt: bytes read, nothing parsed yet
                if not data:
                    protocol.receive_eof()
                    selector.unregister(sock)
                    continue
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if getattr(event, "opcode", None) is Opcode.TEXT:
                        self._on_message(event.data, now)
                reply = protocol.data_to_send()  # pongs, close
                if reply:
                    sock.sendall(b"".join(reply))  # type: ignore[union-attr]
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()

    def _on_message(self, raw: bytes, now: float) -> None:
        if b'"channel":"blocks"' not in raw or b'"type":"update"' not in raw:
            return
        contents = json.loads(raw)["params"]["result"]["contents"]
        if contents.get("event") != "block":
            return
        sealed_at = int(contents["block"]["sealedAt"], 16)  # ms, a hex quantity
        self.delays.append(now - sealed_at)
        self.sealed[int(contents["block"]["number"], 16)] = sealed_at


def _subscriber_process(ws_url: str, count: int, all_channels: bool, out: Any,
                        stop: Any) -> None:
    """One client process: ``count`` subscribers; sends (delays, sealed) back."""
    subs = Subscribers(ws_url, count, all_channels)
    subs.thread.start()
    subs.connected.wait(60)
    out.put("connected")
    stop.wait()
    subs.close()
    subs.thread.join(10)
    out.put((subs.delays, subs.sealed))


def trade_for(url: str, seconds: float, rate: int) -> int:
    """Maker/taker pairs at ``rate`` fills/s for ``seconds`` (accounts the
    replay funded); returns the number of fills."""
    from node.client import L2Client, order_params
    from node.signing import Signer, dev_keys
    from node.transactions import Order

    keys = dev_keys(10)
    maker, takers = Signer(keys[3]), [Signer(k) for k in keys[4:8]]
    client = L2Client(url)
    mk = next(m for m in client.call("l2_getMarkets") if m["symbol"] == "ETH-USD")
    market_id = int(mk["id"], 0)  # a hex quantity, as every id in the API
    tick, step = int(mk["tickSize"]), int(mk["stepSize"])
    price = int(mk["oraclePrice"]) // tick * tick
    fills, started, n = 0, time.monotonic(), 0
    per_batch = max(1, rate // 10)
    while time.monotonic() - started < seconds:
        calls = []
        for _ in range(per_batch):
            n += 1
            taker = takers[n % len(takers)]
            m = Order(maker.address, market_id, n % 2 == 0, price, step, 2 * n + 10**12, 2**40)
            t = Order(taker.address, market_id, n % 2 == 1, price, step, 2 * n + 1 + 10**12,
                      2**40)
            calls.append(("l2_sendOrder", [order_params(m, maker.sign_order(client.domain, m)[1])]))
            calls.append(("l2_sendOrder", [order_params(t, taker.sign_order(client.domain, t)[1],
                                                        "IOC")]))
        results = client.batch(calls)
        fills += sum(len(r["fills"]) for r in results[1::2] if isinstance(r, dict))
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
    client.close()
    return fills


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0.0
    elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def was_dropped(s: socket.socket, wait: float = 5.0) -> bool:
    """True if the node closed a stalled consumer's connection: read what is
    buffered until end of stream (dropped) or ``wait`` seconds of silence."""
    s.settimeout(wait)
    try:
        while True:
            if not s.recv(1 << 16):
                return True
    except (TimeoutError, OSError):
        return False


def measure(subscribers: int = 100, procs: int = 1, stalled: int = 0, limit: int = 2000,
            duration: float = 30.0, rate: int = 200, block_time: float = 0.25,
            all_channels: bool = False, no_batcher: bool = False, rpc: str | None = None,
            quiet: bool = False, buffer: int | None = None) -> dict[str, Any]:
    """One run (see the module docstring); returns the figures: delays
    (``p50_ms``, ``p99_ms``, ``max_ms`` over ``notifications``), block
    cadence (``cadence_mean_ms``, ``cadence_p99_ms``), ``blocks_missed`` and
    ``stalled_dropped`` (how many of the stalled consumers the node closed).
    ``buffer`` lowers the devnet's per-connection stream bound (messages)
    so a stalled consumer is dropped within a short run.
    Raises RuntimeError if the devnet, a subscriber or the replay fails."""
    say = (lambda *a: None) if quiet else print  # noqa: E731
    proc = None
    if rpc is None:
        log = Path(tempfile.mkdtemp()) / "devnet.log"
        proc, url = start_devnet(block_time, log, buffer)
    else:
        url = rpc
    try:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        out, stop = ctx.Queue(), ctx.Event()
        per = [subscribers // procs + (i < subscribers % procs) for i in range(procs)]
        clients = [ctx.Process(target=_subscriber_process, daemon=True,
                               args=(url.replace("http://", "ws://"), n, all_channels, out,
                                     stop)) for n in per if n]
        for p in clients:
            p.start()
        for _ in clients:
            if out.get(timeout=120) != "connected":
                raise RuntimeError("a subscriber process failed")
        import httpx

        if no_batcher:
            httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "devnet_setBatcher",
                                  "params": [False]}, timeout=10)
        port = int(url.rsplit(":", 1)[1])
        stalled_sockets = [stalled_consumer(port) for _ in range(stalled)]
        node_cpu = cpu_seconds(proc.pid) if proc is not None else 0.0
        client_cpu = sum(cpu_seconds(p.pid or 0) for p in clients)
        replay = subprocess.run(
            [sys.executable, "-m", "node.cli", "replay", str(TAPE), "--rpc", url, "--limit",
             str(limit), "--no-wait", "--json"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True)
        if replay.returncode != 0:
            raise RuntimeError(f"replay failed: {replay.stdout.decode()} {replay.stderr.decode()}")
        summary = json.loads(replay.stdout[replay.stdout.index(b"{"):])
        first = summary["firstBlock"]
        extra = trade_for(url, duration, rate) if duration > 0 else 0
        last = int(httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                                         "params": []}, timeout=10).json()["result"], 16)
        time.sleep(1.0)  # let the last notifications arrive
        node_cpu = cpu_seconds(proc.pid) - node_cpu if proc is not None else 0.0
        client_cpu = sum(cpu_seconds(p.pid or 0) for p in clients) - client_cpu
        stop.set()
        delays: list[float] = []
        sealed: dict[int, int] = {}
        for _ in clients:
            d_part, s_part = out.get(timeout=60)
            delays += d_part
            sealed.update(s_part)
        for p in clients:
            p.join(10)
        dropped = sum(was_dropped(s) for s in stalled_sockets)
        for s in stalled_sockets:
            s.close()
        blocks = sorted(n for n in sealed if first <= n <= last)
        gaps = [sealed[b] - sealed[a] for a, b in zip(blocks, blocks[1:], strict=False)
                if b == a + 1]
        d = delays or [float("nan")]
        figures: dict[str, Any] = {
            "subscribers": subscribers, "stalled": stalled, "notifications": len(delays),
            "p50_ms": round(pct(d, 0.5), 1), "p99_ms": round(pct(d, 0.99), 1),
            "max_ms": round(max(d), 1),
            "cadence_mean_ms": round(statistics.mean(gaps)) if gaps else None,
            "cadence_p99_ms": round(pct(gaps, 0.99)) if gaps else None,
            "blocks_missed": len(set(range(first, last + 1)) - set(sealed)),
            "stalled_dropped": dropped,
            "node_cpu_ms_per_block": round(node_cpu * 1000 / max(1, last - first + 1), 1),
            "client_cpu_us_per_notification": round(client_cpu * 1e6 / max(1, len(delays))),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        say(f"subscribers {subscribers} in {len(clients)} processes (+{stalled} stalled"
            f"{', batcher paused' if no_batcher else ''}), block time "
            f"{block_time} s; replay {summary['fills']} fills at "
            f"{summary['fillsPerSecond']} fills/s, then {extra} fills in {duration} s; "
            f"blocks {first}..{last}")
        say(f"seal -> receipt delay over {len(delays)} notifications: p50 "
            f"{figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")
        if gaps:
            say(f"block cadence (sealedAt of consecutive blocks): mean "
                f"{figures['cadence_mean_ms']} ms, p99 {figures['cadence_p99_ms']} ms, "
                f"max {max(gaps)} ms")
        say(f"CPU: node {figures['node_cpu_ms_per_block']} ms per block (all of its work), "
            f"subscriber processes {figures['client_cpu_us_per_notification']} us per "
            f"notification; load average {figures['loadavg_1m']}")
        say(f"blocks missed by the subscribers: {figures['blocks_missed']}"
            + (f"; stalled consumers dropped by the node: {dropped} of {stalled}"
               if stalled else ""))
        return figures
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--procs", type=int, default=1,
                    help="client processes the subscribers are spread over")
    ap.add_argument("--stalled", type=int, default=0, help="consumers that never read")
    ap.add_argument("--limit", type=int, default=2000, help="tape trades to replay")
    ap.add_argument("--duration", type=float, default=30.0,
                    help="seconds of steady trading after the replay")
    ap.add_argument("--rate", type=int, default=200, help="fills/s while trading steadily")
    ap.add_argument("--block-time", type=float, default=0.25)
    ap.add_argument("--all-channels", action="store_true",
                    help="subscribe each client to orderbook and trades too")
    ap.add_argument("--no-batcher", action="store_true",
                    help="pause batch submission (devnet_setBatcher false) to keep the "
                         "embedded L1's py-evm work off the node's interpreter lock")
    ap.add_argument("--rpc", default=None, help="use a running node instead of a new devnet")
    ap.add_argument("--buffer", type=int, default=None,
                    help="the devnet's per-connection stream bound in messages (default "
                         "10,000, as geth); lower it to see stalled consumers dropped sooner")
    a = ap.parse_args()
    measure(a.subscribers, a.procs, a.stalled, a.limit, a.duration, a.rate, a.block_time,
            a.all_channels, a.no_batcher, a.rpc, buffer=a.buffer)


if __name__ == "__main__":
    main()
