"""The ``derivnet`` command line (click)."""

from __future__ import annotations

import logging
import sys

import click

from node.node import NodeConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """derivnet: a local optimistic-rollup devnet for derivatives."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8545, show_default=True, help="L2 JSON-RPC port (HTTP + WS).")
@click.option("--l1-port", default=8546, show_default=True, help="Embedded L1 JSON-RPC port.")
@click.option("--datadir", default=None, type=click.Path(file_okay=False),
              help="Where the chain is stored (LevelDB); omit for an in-memory devnet.")
@click.option("--block-time", default=0.25, show_default=True, type=float,
              help="Seconds between L2 blocks.")
@click.option("--batch-interval", default=2.0, show_default=True, type=float,
              help="Seconds between batch submissions to L1.")
@click.option("--l1-block-time", default=1.0, show_default=True, type=float,
              help="Seconds between embedded L1 blocks.")
@click.option("--genesis", "genesis_path", default=None, type=click.Path(dir_okay=False),
              help="Genesis file (markets, roles); default: the packaged node/genesis.json.")
@click.option("--max-block-txs", default=5000, show_default=True,
              help="Seal a block early once it holds this many transactions.")
@click.option("--preset", type=click.Choice(["devnet", "mainnet"]), default="devnet",
              show_default=True,
              help="Delays: devnet (challenge 60 s, inclusion 30 s, escape 120 s) or "
                   "mainnet-like (7 days, 12 hours, 7 days).")
@click.option("--challenge-window", type=int, default=None,
              help="Seconds of L1 time before a batch can be finalized (overrides the preset).")
@click.option("--inclusion-window", type=int, default=None,
              help="Seconds after which an unconsumed deposit blocks batches (overrides the preset).")
@click.option("--escape-delay", type=int, default=None,
              help="Seconds without a batch after which anyone can freeze the Rollup "
                   "(overrides the preset).")
@click.option("--l1", "l1_mode", type=click.Choice(["process", "in-process"]), default="process",
              show_default=True,
              help="Run the embedded L1 as its own child process, or inside the node's process "
                   "(shares the node's interpreter lock: slower under load).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def devnet(host: str, port: int, l1_port: int, datadir: str | None, block_time: float,
           batch_interval: float, l1_block_time: float, genesis_path: str | None,
           max_block_txs: int, preset: str, challenge_window: int | None,
           inclusion_window: int | None, escape_delay: int | None, l1_mode: str,
           verbose: bool) -> None:
    """Run the embedded L1, the Rollup contracts and the L2 node."""
    import trio

    from node.node import Node

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = NodeConfig(datadir=datadir, host=host, port=port, l1_port=l1_port,
                        block_time=block_time, batch_interval=batch_interval,
                        l1_block_time=l1_block_time, genesis_path=genesis_path,
                        max_block_txs=max_block_txs, preset=preset,
                        challenge_window=challenge_window, inclusion_window=inclusion_window,
                        escape_delay=escape_delay, l1_process=l1_mode == "process")
    node = Node(config)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            rc = node.rollup_config_json()
            click.echo(f"derivnet devnet ready: L2 JSON-RPC http://{host}:{port} "
                       f"(chain {rc['l2_chain_id']}), L1 {rc['l1_rpc_url']} "
                       f"(chain {rc['l1_chain_id']})")
            click.echo(f"  Rollup {rc['rollup_address']}  USDC {rc['usdc_address']}  "
                       f"head L2 block {node.chain.head.number}"
                       + (f"  datadir {datadir}" if datadir else "  (in-memory)"))
            sys.stdout.flush()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        node.close()


@main.command()
@click.argument("tape", type=click.Path(exists=True, dir_okay=False))
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--l1-rpc", default=None, help="L1 JSON-RPC URL (default: from l2_rollupConfig).")
@click.option("--takers", default=4, show_default=True, help="Number of taker accounts.")
@click.option("--limit", default=None, type=int, help="Replay only the first N trades.")
@click.option("--start", default=0, show_default=True, help="Skip the first N trades (resume).")
@click.option("--batch", "rpc_batch", default=50, show_default=True,
              help="Trades per JSON-RPC batch request.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the last batch on L1.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(tape: str, rpc: str, l1_rpc: str | None, takers: int, limit: int | None, start: int,
           rpc_batch: int, no_wait: bool, as_json: bool) -> None:
    """Replay a trade TAPE (CSV) as signed maker/taker orders against a running node."""
    from node.replay import ReplayOptions, run_replay

    summary = run_replay(ReplayOptions(
        tape=tape, rpc=rpc, l1_rpc=l1_rpc, takers=takers, limit=limit, start=start,
        rpc_batch=rpc_batch, wait_for_l1=not no_wait, progress=not as_json))
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
    else:
        from node.replay import print_summary

        print_summary(summary)
    if summary.get("failed", 0):
        sys.exit(1)


# -- settlement commands --------------------------------------------------------

def _signer(account: int | None, private_key: str | None) -> object:
    from node.signing import Signer, dev_keys

    if private_key:
        key = private_key[2:] if private_key.startswith("0x") else private_key
        return Signer(bytes.fromhex(key))
    index = 3 if account is None else account
    if not 0 <= index < 10:
        raise click.BadParameter("dev account index must be 0..9", param_hint="--account")
    return Signer(dev_keys(10)[index])


def _usdc(text: str) -> int:
    """'1000' or '12.5' USDC -> base units (1e-6)."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text) * 10**6
    except InvalidOperation:
        raise click.BadParameter(f"not an amount: {text}") from None
    if value <= 0 or value != value.to_integral_value():
        raise click.BadParameter("amount must be positive with at most 6 decimals")
    return int(value)


def _clients(rpc: str, l1_rpc: str | None):  # type: ignore[no-untyped-def]
    from contextlib import ExitStack

    from l1_stub.client import connect
    from node.client import L2Client

    stack = ExitStack()
    client = stack.enter_context(L2Client(rpc))
    w3 = stack.enter_context(connect(l1_rpc or client.config["l1_rpc_url"]))
    return stack, client, w3


def _emit(as_json: bool, data: dict[str, object], lines: list[str]) -> None:
    import json

    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


_rpc_opt = click.option("--rpc", default="http://127.0.0.1:8545", show_default=True,
                        help="L2 JSON-RPC URL.")
_l1_opt = click.option("--l1-rpc", default=None,
                       help="L1 JSON-RPC URL (default: from l2_rollupConfig).")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_acct_opt = click.option("--account", type=int, default=None,
                         help="Dev account index 0..9 (default 3).")
_key_opt = click.option("--private-key", default=None, help="Hex private key instead of --account.")


@main.command()
@_rpc_opt
@_json_opt
def status(rpc: str, as_json: bool) -> None:
    """Sync status: unsafe/safe/finalized heads, L1 head, latest batch, time to finality."""
    from node.client import L2Client

    with L2Client(rpc) as client:
        s = client.sync_status()
    if as_json:
        import json

        click.echo(json.dumps(s, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="derivnet sync status")
    table.add_column("head")
    table.add_column("number", justify="right")
    table.add_column("hash")
    table.add_column("timestamp", justify="right")
    for name in ("unsafe_l2", "safe_l2", "finalized_l2", "head_l1", "finalized_l1"):
        ref = s[name]
        table.add_row(name, str(ref["number"]), ref["hash"][:18] + "...", str(ref["timestamp"]))
    console = Console()
    console.print(table)
    b = s["latest_batch"]
    if b is None:
        console.print("no batch posted yet")
    else:
        console.print(f"latest batch {b['index']}: L2 blocks {b['firstBlock']}..{b['lastBlock']}, "
                      f"{b['status']}, finalizable in {b['secondsToFinality']} s "
                      f"(challenge window {s['challenge_window']} s); "
                      f"{s['finalized_batches']} batches finalized")
    if s["frozen"]:
        console.print("[red]the Rollup is frozen: use `derivnet escape`[/red]")
    if s["batcher_error"]:
        console.print(f"[yellow]last batch submission failed: {s['batcher_error']}[/yellow]")


@main.command()
@click.argument("amount")
@click.option("--to", "to", default=None, help="L2 account to credit (default: the sender).")
@_acct_opt
@_key_opt
@_rpc_opt
@_l1_opt
@click.option("--no-wait", is_flag=True, help="Do not wait for the sequencer to include it.")
@_json_opt
def deposit(amount: str, to: str | None, account: int | None, private_key: str | None, rpc: str,
            l1_rpc: str | None, no_wait: bool, as_json: bool) -> None:
    """Deposit AMOUNT USDC from L1 into the rollup (devnet faucet tops up the L1 balance)."""
    from node import wallet

    signer = _signer(account, private_key)
    stack, client, w3 = _clients(rpc, l1_rpc)
    with stack:
        r = wallet.deposit(client, w3, signer, _usdc(amount),  # type: ignore[arg-type]
                           bytes.fromhex(to[2:]) if to else None, wait=not no_wait)
    _emit(as_json, r.__dict__, [f"deposit #{r.index} of {amount} USDC: L1 tx {r.l1_tx}",
                                "included on L2" if r.included else "waiting for inclusion"])


@main.command()
@click.argument("amount")
@click.option("--to", "to", default=None, help="L1 recipient (default: the account).")
@_acct_opt
@_key_opt
@_rpc_opt
@_l1_opt
@click.option("--warp", is_flag=True,
              help="Devnet: warp L1 time over the challenge window instead of waiting.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait for finality.")
@_json_opt
def withdraw(amount: str, to: str | None, account: int | None, private_key: str | None, rpc: str,
             l1_rpc: str | None, warp: bool, timeout: float, as_json: bool) -> None:
    """Withdraw AMOUNT USDC: L2 withdrawal, wait for finality, prove and finalize on L1."""
    from rich.progress import BarColumn, Progress, TimeElapsedColumn

    from node import wallet

    signer = _signer(account, private_key)
    stack, client, w3 = _clients(rpc, l1_rpc)
    with stack:
        with Progress("[progress.description]{task.description}", BarColumn(),
                      TimeElapsedColumn(), disable=as_json) as bar:
            task = bar.add_task("withdrawing", total=1.0)

            def show(message: str, fraction: float | None) -> None:
                bar.update(task, description=message, completed=fraction or 0.0)

            try:
                r = wallet.withdraw(client, w3, signer, _usdc(amount),  # type: ignore[arg-type]
                                    bytes.fromhex(to[2:]) if to else None, warp=warp,
                                    timeout=timeout, progress=show)
            except TimeoutError as exc:
                raise click.ClickException(str(exc)) from None
    _emit(as_json, r.__dict__, [f"withdrawal #{r.withdrawal_id} of {amount} USDC to {r.recipient}",
                                f"L2 tx {r.l2_tx}, batch {r.batch}",
                                f"finalized on L1: tx {r.l1_tx}"])


@main.command()
@_acct_opt
@_key_opt
@_rpc_opt
@_l1_opt
@click.option("--no-freeze", is_flag=True, help="Do not freeze the Rollup if it is not frozen.")
@_json_opt
def escape(account: int | None, private_key: str | None, rpc: str, l1_rpc: str | None,
           no_freeze: bool, as_json: bool) -> None:
    """Escape hatch: freeze the Rollup (if the sequencer has been silent for the
    escape delay) and withdraw the account's equity at the last finalized root."""
    from node import wallet

    signer = _signer(account, private_key)
    stack, client, w3 = _clients(rpc, l1_rpc)
    with stack:
        try:
            r = wallet.escape(client, w3, signer, freeze=not no_freeze)  # type: ignore[arg-type]
        except Exception as exc:
            raise click.ClickException(str(exc)) from None
    _emit(as_json, r.__dict__, [("froze the Rollup; " if r.froze else "")
                                + f"escaped {r.amount / 10**6} USDC to {r.account}",
                                f"L1 tx {r.l1_tx}"])


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def l1(args: tuple[str, ...]) -> None:
    """Run the embedded L1 alone as a JSON-RPC node (like anvil); see `derivnet l1 --help`."""
    from l1_stub.__main__ import main as l1_main

    sys.exit(l1_main(list(args), prog="derivnet l1"))


if __name__ == "__main__":  # pragma: no cover
    main()
