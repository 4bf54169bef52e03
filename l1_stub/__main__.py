"""``python -m l1_stub``: the embedded L1 as a standalone JSON-RPC node
(like ``anvil``): ``EmbeddedL1`` served by ``l1_stub.server.serve_l1``.

    python -m l1_stub [--host H] [--port 8546] [--datadir D] [--chain-id 900]

Answers the standard ``eth_`` methods and the devnet controls of
``l1_stub.server`` (``evm_mine``, ``anvil_mine``, ``evm_increaseTime``,
``evm_setNextBlockTimestamp``, ``evm_setAutomine``), plus
``derivnet_timeOffset`` (the total warp offset, hex seconds) and
``derivnet_pid`` (this process's id). Blocks are
mined only on request (the devnet node mines every ``--l1-block-time``);
``--block-time S`` mines one every S seconds on its own.

``--exit-with-parent`` (used by ``l1_stub.process.L1Process``): exit when
stdin reaches end of file or the parent process changes (the parent died),
and ignore SIGINT (the parent stops it). ``--lock-wait S``: if the datadir is
still locked by an exiting L1 process, or the port still bound, retry for up
to S seconds. SIGTERM and SIGINT stop it cleanly (datadir closed); exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

log = logging.getLogger("derivnet.l1")


def _parse(argv: list[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog, description="The embedded L1 (py-evm) as a standalone JSON-RPC node, "
                               "like anvil; Ctrl-C stops it.")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8546, help="JSON-RPC port (HTTP)")
    p.add_argument("--datadir", default=None, help="LevelDB directory (omit: in memory)")
    p.add_argument("--chain-id", type=int, default=900)
    p.add_argument("--block-time", type=float, default=None,
                   help="mine a block every S seconds (default: only on request)")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when stdin closes or the parent process dies")
    p.add_argument("--lock-wait", type=float, default=15.0,
                   help="seconds to retry a locked datadir or a bound port")
    p.add_argument("--no-devnet-controls", action="store_true",
                   help="refuse time warps (evm_increaseTime, evm_setNextBlockTimestamp, "
                        "anvil_*); evm_mine stays")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.block_time is not None and a.block_time <= 0:
        p.error("--block-time must be > 0")
    return a


def _open_l1(args: argparse.Namespace, deadline: float) -> Any:
    from l1_stub.chain import EmbeddedL1

    while True:
        try:
            return EmbeddedL1(chain_id=args.chain_id, datadir=args.datadir)
        except Exception as exc:  # plyvel.IOError: "... lock ... unavailable"
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str] | None = None, prog: str = "python -m l1_stub") -> int:
    """Run until stopped (see the module docstring); returns the exit code."""
    args = _parse(argv, prog)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    parent = os.getppid()
    if args.exit_with_parent:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    deadline = time.monotonic() + args.lock_wait
    l1 = _open_l1(args, deadline)
    l1.devnet_controls = not args.no_devnet_controls
    l1.provider.api_endpoints["derivnet"] = {
        "timeOffset": lambda _t, _p: l1.time_offset,
        "pid": lambda _t, _p: os.getpid(),  # L1Process checks it is talking to its child
    }
    try:
        import trio

        from node.runtime import tune_gc

        tune_gc()
        return trio.run(_serve, l1, args, parent, deadline)
    finally:
        l1.close()


async def _serve(l1: Any, args: argparse.Namespace, parent: int, deadline: float) -> int:
    """Serve until stopped: 0; 1 if the port stays bound past ``deadline``."""
    import trio

    from l1_stub.server import serve_l1
    from node.runtime import find_exception

    async with trio.open_nursery() as nursery:
        while True:
            try:
                url = await nursery.start(serve_l1, l1, args.host, args.port)
                break
            except BaseException as raised:  # port still held by an exiting L1 process
                # the OSError of a failed listen, alone in the nurseries' groups
                exc = find_exception(raised, OSError, only=True)
                if exc is None:
                    raise
                if time.monotonic() > deadline:
                    log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
                    return 1
                log.debug("bind %s:%s: %s; retrying", args.host, args.port, exc)
                await trio.sleep(0.1)
        log.info("L1 (chain %d) on %s, datadir %s", args.chain_id, url, args.datadir)
        stop = nursery.cancel_scope.cancel
        nursery.start_soon(_stop_on_signal, stop)
        if args.exit_with_parent:
            token = trio.lowlevel.current_trio_token()
            threading.Thread(target=_watch_stdin, args=(token, stop), daemon=True).start()
            nursery.start_soon(_watch_parent, parent, stop)
        if args.block_time is not None:
            nursery.start_soon(_mine_every, l1, args.block_time)
    return 0


def _watch_stdin(token: Any, stop: Any) -> None:
    """Blocks on stdin; at end of file (the parent closed the pipe or died)
    stops the server."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    log.info("stdin closed: stopping")
    try:
        token.run_sync_soon(stop)
    except Exception:  # noqa: BLE001 - trio already finished
        pass


async def _watch_parent(parent: int, stop: Any) -> None:
    import trio

    while os.getppid() == parent:
        await trio.sleep(0.2)
    log.warning("parent process %d is gone: stopping", parent)
    stop()


async def _stop_on_signal(stop: Any) -> None:
    import trio

    signals = {signal.SIGTERM} | ({signal.SIGINT} if signal.getsignal(signal.SIGINT)
                                  is not signal.SIG_IGN else set())
    with trio.open_signal_receiver(*signals) as received:
        async for _ in received:
            stop()
            return


async def _mine_every(l1: Any, seconds: float) -> None:
    import trio

    while True:
        await trio.sleep(seconds)
        await trio.to_thread.run_sync(l1.mine)


if __name__ == "__main__":
    sys.exit(main())
