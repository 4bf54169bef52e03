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
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def devnet(host: str, port: int, l1_port: int, datadir: str | None, block_time: float,
           batch_interval: float, l1_block_time: float, genesis_path: str | None,
           max_block_txs: int, verbose: bool) -> None:
    """Run the embedded L1, the Rollup contracts and the L2 node."""
    import trio

    from node.node import Node

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = NodeConfig(datadir=datadir, host=host, port=port, l1_port=l1_port,
                        block_time=block_time, batch_interval=batch_interval,
                        l1_block_time=l1_block_time, genesis_path=genesis_path,
                        max_block_txs=max_block_txs)
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


if __name__ == "__main__":  # pragma: no cover
    main()
