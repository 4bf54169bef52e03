"""The ``derivnet`` command line (click)."""

from __future__ import annotations

import errno
import logging
import signal
import sys
from typing import Any

import click

from node.node import NodeConfig
from prover.trace import Fault
from sequencer.funding_clock import MAX_SAMPLE_INTERVAL, MAX_TICK_INTERVAL


class _Group(click.Group):
    """Click group whose commands fail with one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
            raise click.ClickException(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    """A user-facing line for an unexpected error (connection refused, bad file...)."""
    import httpx
    import requests

    if isinstance(exc, httpx.ConnectError | requests.exceptions.ConnectionError):
        return f"cannot reach the node: {exc} (is `derivnet devnet` running? see --rpc)"
    if isinstance(exc, httpx.TimeoutException | requests.exceptions.Timeout):
        return f"the node did not answer in time: {exc}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("derivnet")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="derivnet")
def main() -> None:
    """derivnet: a local optimistic-rollup devnet for derivatives."""
    _sigterm_as_ctrl_c()


def _sigterm_as_ctrl_c() -> None:
    """Make SIGTERM (``kill``, ``docker stop``, systemd) stop a command the way
    Ctrl-C does: the devnet closes its store and exits 0, ``bots`` winds down.

    The handler re-raises SIGINT, so trio's own Ctrl-C handling (which defers
    KeyboardInterrupt out of its protected sections) does the stopping. A
    process whose SIGINT is ignored (started with ``&`` by a non-interactive
    shell) keeps the default SIGTERM: an immediate exit, which loses nothing
    acknowledged either (the journal is synced before each acknowledgement).
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGTERM, lambda _signum, _frame: signal.raise_signal(signal.SIGINT))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8545, show_default=True, type=click.IntRange(1, 65535),
              help="L2 JSON-RPC port (HTTP + WS).")
@click.option("--l1-port", default=8546, show_default=True, type=click.IntRange(1, 65535),
              help="Embedded L1 JSON-RPC port.")
@click.option("--datadir", default=None, type=click.Path(file_okay=False),
              help="Where the chain is stored (LevelDB); omit for an in-memory devnet. A "
                   "restart keeps the datadir's genesis, preset and windows.")
@click.option("--block-time", default=0.25, show_default=True,
              type=click.FloatRange(0.01, 3600), help="Seconds between L2 blocks (0.01..3600).")
@click.option("--batch-interval", default=2.0, show_default=True,
              type=click.FloatRange(0.05, 86400),
              help="Seconds between batch submissions to L1 (0.05..86400).")
@click.option("--l1-block-time", default=1.0, show_default=True,
              type=click.FloatRange(1, 3600),
              help="Seconds between embedded L1 blocks (1..3600: L1 timestamps are whole "
                   "seconds and strictly increase, so faster blocks would run L1 time ahead "
                   "of the wall clock).")
@click.option("--genesis", "genesis_path", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="Genesis file (markets, roles); default: the datadir's, else the packaged "
                   "node/genesis.json.")
@click.option("--max-block-txs", default=5000, show_default=True,
              type=click.IntRange(1, 65535),
              help="Seal a block early once it holds this many transactions (a block is "
                   "also sealed before it would outgrow one L1 batch).")
@click.option("--preset", type=click.Choice(["devnet", "mainnet"]), default=None,
              help="Delays: devnet (challenge 60 s, inclusion 30 s, escape 120 s; the default "
                   "for a new datadir) or mainnet-like (7 days, 12 hours, 7 days).")
@click.option("--challenge-window", type=click.IntRange(0, 2**32), default=None,
              help="Seconds of L1 time before a batch can be finalized (overrides the preset).")
@click.option("--inclusion-window", type=click.IntRange(0, 2**32), default=None,
              help="Seconds after which an unconsumed deposit blocks batches (overrides the preset).")
@click.option("--escape-delay", type=click.IntRange(0, 2**32), default=None,
              help="Seconds without a batch after which anyone can freeze the Rollup "
                   "(overrides the preset).")
@click.option("--dissection-degree", type=click.IntRange(2, 16), default=None,
              help="Roots per dispute move + 1 (k of the n-ary dissection, 2..16; default 16; "
                   "2 is plain bisection).")
@click.option("--clock", type=click.IntRange(1, 2**32), default=None,
              help="Seconds of L1 time each dispute party has in total (chess clock; devnet "
                   "30, mainnet 3.5 days).")
@click.option("--challenger-bond", type=click.IntRange(0, 2**128 - 1), default=None,
              help="Wei a challenger posts to open a dispute (devnet 0.1 ether).")
@click.option("--proposer-bond", type=click.IntRange(0, 2**128 - 1), default=None,
              help="Wei the sequencer posts with each batch, refunded at finality "
                   "(devnet 0.1 ether).")
@click.option("--max-drift", type=click.IntRange(0, 2**32), default=None,
              help="Seconds an L2 block timestamp may be ahead of its batch's L1 block "
                   "(devnet 300, mainnet 1800).")
@click.option("--sequencer-key", default=None,
              help="Hex private key of the genesis sequencer (default: the dev account that "
                   "genesis names).")
@click.option("--no-devnet-controls", is_flag=True,
              help="Refuse devnet_* on the L2 port and time warps (evm_increaseTime, "
                   "evm_setNextBlockTimestamp, evm_mine/anvil_mine with a timestamp or "
                   "interval, evm_setAutomine) on the L1 port.")
@click.option("--l1", "l1_mode", type=click.Choice(["process", "in-process"]), default="process",
              show_default=True,
              help="Run the embedded L1 as its own child process, or inside the node's process "
                   "(shares the node's interpreter lock: slower under load).")
@click.option("--l1-rpc", default=None, metavar="URL",
              help="Use the Ethereum node at URL (anvil, hardhat, ...; chain id = genesis "
                   "l1ChainId, 900) as the L1 instead of the embedded chain: the Rollup and "
                   "USDC are deployed there, and the L2 follows its blocks and time.")
@click.option("--l1-key", default=None, metavar="KEY",
              help="With --l1-rpc: hex private key that deploys and sequences (it must be "
                   "the genesis sequencer; default: anvil/hardhat account 0).")
@click.option("--l1-rollup", default=None, metavar="ADDRESS",
              help="With --l1-rpc: attach to this Rollup (and its USDC and dispute game) "
                   "instead of deploying; it must match genesis and hold no batches yet.")
@click.option("--faulty-proposer", type=click.Choice([k.value for k in Fault]), default=None,
              help="Dishonest proposer for dispute testing: the first batch with a step this "
                   "fault applies to is posted with a wrong state root (devnet_injectFault arms "
                   "one at run time).")
@click.option("--silent-defender", is_flag=True,
              help="Never answer a dispute (the proposer then loses every game on its clock).")
@click.option("--funding-sample-interval", type=click.IntRange(0, MAX_SAMPLE_INTERVAL),
              default=None,
              help="Seconds of L2 time between funding premium samples of each book "
                   f"(0..{MAX_SAMPLE_INTERVAL}; devnet 1, mainnet preset 60; 0: no sampling, "
                   "ticks carry interest only).")
@click.option("--funding-interval", type=click.IntRange(0, MAX_TICK_INTERVAL), default=None,
              help="Seconds of L2 time between FundingTicks, one per market with the median "
                   f"premium (0..{MAX_TICK_INTERVAL}; devnet 10, mainnet preset 3600; 0: off).")
@click.option("--oracle-key", default=None,
              help="Hex private key of the genesis oracle, which signs FundingTicks (default: "
                   "the dev account that genesis names; without one, ticks are off).")
@click.option("--risk-engine/--no-risk-engine", default=True, show_default=True,
              help="The sequencer's risk engine: liquidates accounts below maintenance margin "
                   "through the book, then with the backstop liquidator, then deleverages "
                   "(sequencer policy, docs/protocol.md).")
@click.option("--backstop-key", default=None, metavar="KEY",
              help="Hex private key of the backstop liquidator, funded with 1,000,000 USDC by "
                   "an L1 deposit when a new devnet starts (default: the sequencer's key, dev "
                   "account 0).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def devnet(host: str, port: int, l1_port: int, datadir: str | None, block_time: float,
           batch_interval: float, l1_block_time: float, genesis_path: str | None,
           max_block_txs: int, preset: str | None, challenge_window: int | None,
           inclusion_window: int | None, escape_delay: int | None,
           dissection_degree: int | None, clock: int | None, challenger_bond: int | None,
           proposer_bond: int | None, max_drift: int | None, sequencer_key: str | None,
           no_devnet_controls: bool, l1_mode: str, l1_rpc: str | None, l1_key: str | None,
           l1_rollup: str | None, faulty_proposer: str | None,
           silent_defender: bool, funding_sample_interval: int | None,
           funding_interval: int | None, oracle_key: str | None, risk_engine: bool,
           backstop_key: str | None, verbose: bool) -> None:
    """Run the embedded L1, the Rollup contracts and the L2 node."""
    import trio

    from node.node import L1Lost, Node

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if port == l1_port:
        raise click.BadParameter("the L2 and L1 ports must differ", param_hint="--l1-port")
    for hint, given in (("--l1-key", l1_key), ("--l1-rollup", l1_rollup)):
        if given and not l1_rpc:
            raise click.BadParameter("only applies with --l1-rpc", param_hint=hint)
    if l1_key and _parse_key(l1_key, "--l1-key") != _parse_key(sequencer_key or l1_key,
                                                                 "--sequencer-key"):
        raise click.BadParameter("differs from --sequencer-key (one key deploys and "
                                 "sequences)", param_hint="--l1-key")
    sequencer_key = sequencer_key or l1_key
    if (funding_sample_interval is not None and funding_interval
            and funding_sample_interval > funding_interval):
        raise click.BadParameter(f"{funding_sample_interval} s is longer than --funding-interval "
                                 f"({funding_interval} s)", param_hint="--funding-sample-interval")
    warning = _exposure_warning(host, not no_devnet_controls)
    if warning:
        click.echo(warning, err=True)
    config = NodeConfig(datadir=datadir, host=host, port=port, l1_port=l1_port,
                        block_time=block_time, batch_interval=batch_interval,
                        l1_block_time=l1_block_time, genesis_path=genesis_path,
                        max_block_txs=max_block_txs, preset=preset,
                        challenge_window=challenge_window, inclusion_window=inclusion_window,
                        escape_delay=escape_delay, dissection_degree=dissection_degree,
                        clock=clock, challenger_bond=challenger_bond,
                        proposer_bond=proposer_bond, max_drift=max_drift,
                        sequencer_key=_parse_key(sequencer_key, "--sequencer-key")
                        if sequencer_key else None,
                        devnet_controls=not no_devnet_controls,
                        l1_process=l1_mode == "process", l1_rpc=l1_rpc, l1_rollup=l1_rollup,
                        faulty_proposer=faulty_proposer,
                        silent_defender=silent_defender,
                        funding_sample_interval=funding_sample_interval,
                        funding_interval=funding_interval,
                        oracle_key=(_parse_key(oracle_key, "--oracle-key")
                                    if oracle_key else None),
                        risk_engine=risk_engine,
                        backstop_key=_parse_key(backstop_key, "--backstop-key")
                        if backstop_key else None)
    try:
        node = Node(config)
    except ValueError as exc:  # DatadirMismatch, a bad genesis or key
        raise click.ClickException(str(exc)) from None

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

    from node.runtime import find_exception, tune_gc

    tune_gc()
    try:
        trio.run(run)
    except BaseException as exc:  # Ctrl-C may arrive wrapped in the nursery's group
        if not _is_interrupt(exc):
            lost = find_exception(exc, L1Lost)
            if lost is not None:
                raise click.ClickException(str(lost)) from None
            listen = find_exception(exc, OSError)
            if isinstance(listen, OSError) and listen.errno in _LISTEN_ERRNOS:
                raise click.ClickException(
                    f"--port {port}: cannot listen on {host}:{port} ({listen.strerror}); "
                    "stop what holds it or pick another --port") from None
            raise
        click.echo("stopped")
    finally:
        node.close()


_LISTEN_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _is_interrupt(exc: BaseException) -> bool:
    """True for KeyboardInterrupt, alone or as the only thing in exception groups."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(KeyboardInterrupt)
        return rest is None
    return False


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exposure_warning(host: str, controls: bool) -> str | None:
    """The warning printed when the devnet listens beyond this machine."""
    if _is_loopback(host):
        return None
    exposed = ["the L1 port's 10 unlocked dev accounts (eth_sendTransaction signs with "
               "anvil's public test keys: anyone can spend them and send as the sequencer)"]
    if controls:
        exposed.append("devnet controls (devnet_* on the L2 port, time warps on the L1 port)")
    return (f"WARNING: listening on {host}, not loopback: other machines can reach "
            + " and ".join(exposed) + ". Use --no-devnet-controls and a firewall, or bind "
            "127.0.0.1.")


def _parse_key(text: str, hint: str) -> bytes:
    """A 32-byte hex private key (0x optional); BadParameter otherwise."""
    raw = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise click.BadParameter("not a hex private key", param_hint=hint) from None
    if len(key) != 32 or not 0 < int.from_bytes(key, "big") < 2**256 - 2**32 - 977:
        raise click.BadParameter("a private key is 32 bytes (64 hex digits)", param_hint=hint)
    return key


@main.command()
@click.argument("tape", type=click.Path(exists=True, dir_okay=False))
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--l1-rpc", default=None, help="L1 JSON-RPC URL (default: from l2_rollupConfig).")
@click.option("--market", default=None,
              help="Market symbol (default: from the tape's file name, ethusdt-... -> ETH-USD). "
                   "Not listed yet: a devnet lists it with scales fitted to the tape.")
@click.option("--takers", default=4, show_default=True, help="Number of taker accounts.")
@click.option("--limit", default=None, type=int, help="Replay only the first N trades.")
@click.option("--start", default=0, show_default=True, help="Skip the first N trades (resume).")
@click.option("--batch", "rpc_batch", default=50, show_default=True,
              help="Trades per JSON-RPC batch request.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the last batch on L1.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(tape: str, rpc: str, l1_rpc: str | None, market: str | None, takers: int,
           limit: int | None, start: int, rpc_batch: int, no_wait: bool, as_json: bool) -> None:
    """Replay a trade TAPE (CSV) as signed maker/taker orders against a running node."""
    from node.replay import ReplayIncomplete, ReplayOptions, run_replay

    try:
        summary = run_replay(ReplayOptions(
            tape=tape, rpc=rpc, l1_rpc=l1_rpc, market=market, takers=takers, limit=limit,
            start=start,
            rpc_batch=rpc_batch, wait_for_l1=not no_wait, progress=not as_json))
    except ValueError as exc:  # the tape or the market choice (names the tape line)
        raise click.ClickException(str(exc)) from None
    except ReplayIncomplete as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
    else:
        from node.replay import print_summary

        print_summary(summary)
    if summary.get("failed", 0):
        sys.exit(1)


@main.command()
@click.option("--makers", default=2, show_default=True, type=click.IntRange(0, 7),
              help="Market makers (dev accounts 3.., makers first).")
@click.option("--takers", default=2, show_default=True, type=click.IntRange(0, 7),
              help="Takers sending random marketable IOC orders.")
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(1),
              help="Seconds of trading (Ctrl-C ends earlier, with the summary).")
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--l1-rpc", default=None, help="L1 JSON-RPC URL (default: from l2_rollupConfig).")
@click.option("--market", default="ETH-USD", show_default=True, help="Market symbol.")
@click.option("--oracle", "oracle_mode", type=click.Choice(["tape", "walk"]), default="walk",
              show_default=True, help="Oracle prices: the tape's prices or a random walk.")
@click.option("--tape", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Tape CSV for --oracle tape (default: ../shared/data/ethusdt-trades-...).")
@click.option("--seed", default=None, type=int, help="Random seed.")
@click.option("--no-dashboard", is_flag=True, help="Print a status line every few seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def bots(makers: int, takers: int, duration: float, rpc: str, l1_rpc: str | None, market: str,
         oracle_mode: str, tape: str | None, seed: int | None, no_dashboard: bool,
         as_json: bool) -> None:
    """Run market makers, takers and an oracle on a devnet, with a live dashboard."""
    from node.bots import BotOptions, BotsError, run_bots

    opts = BotOptions(makers=makers, takers=takers, duration=duration, rpc=rpc, market=market,
                      oracle=oracle_mode, tape=tape, seed=seed)
    try:
        summary = run_bots(opts, l1_rpc, dashboard=not no_dashboard, as_json=as_json)
    except KeyboardInterrupt:  # while funding, before any trading
        click.echo("interrupted")
        return
    except (BotsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except TimeoutError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if summary is not None and not summary["rootsMatch"]:
        sys.exit(1)


# -- markets ------------------------------------------------------------------------

MARKET_COLUMNS = ("id", "symbol", "price dec", "size dec", "tick", "step", "margin i/m %",
                  "fee m/t %", "oracle price", "funding 8h %", "open interest", "imf eff %")


def _market_rows(markets: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Table cells: tick (quote units), step (base units), margins and fees
    in percent, oracle price in quote units, the last funding tick's 8-hour
    rate in percent (positive: longs pay shorts), open interest (base units,
    the longs' sum) and the open-interest-scaled initial margin in percent."""
    from decimal import Decimal

    from node.client import quantity

    def pct(ppm: Any) -> str:
        return f"{Decimal(quantity(ppm)).scaleb(-4).normalize():f}"

    rows = []
    for m in markets:
        pd, sd = quantity(m["priceDecimals"]), quantity(m["sizeDecimals"])
        rows.append((str(quantity(m["id"])), str(m["symbol"]), str(pd), str(sd),
                     f"{Decimal(int(m['tickSize'])).scaleb(-pd):f}",
                     f"{Decimal(int(m['stepSize'])).scaleb(-sd):f}",
                     f"{pct(m['initialMarginPpm'])}/{pct(m['maintenanceMarginPpm'])}",
                     f"{pct(m['makerFeePpm'])}/{pct(m['takerFeePpm'])}",
                     f"{Decimal(int(m['oraclePrice'])).scaleb(-pd):f}",
                     f"{Decimal(int(m.get('fundingRate8h', 0))).scaleb(-4).normalize():f}",
                     f"{Decimal(int(m.get('openInterest', 0))).scaleb(-sd):f}",
                     pct(m.get("initialMarginPpmEffective", m["initialMarginPpm"]))))
    return rows


@main.group(invoke_without_command=True)
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def markets(ctx: click.Context, rpc: str, as_json: bool) -> None:
    """List the markets (symbols, scales, margins, fees, oracle prices); `markets add` lists one."""
    ctx.obj = {"rpc": rpc}
    if ctx.invoked_subcommand is not None:
        return
    from node.client import L2Client

    import httpx

    try:
        with L2Client(rpc) as client:
            listed = client.call("l2_getMarkets", "pending")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no node answering at {rpc}: {exc}") from None
    if as_json:
        import json

        click.echo(json.dumps(listed, indent=2))
        return
    _print_table("derivnet markets", MARKET_COLUMNS, _market_rows(listed))
    if listed and "insuranceFund" in listed[0]:
        click.echo(f"insurance fund (all markets): {_usdc_text(listed[0]['insuranceFund'])} USDC")


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A rich table of ``rows`` (cells as text), never cropped: wider than
    the terminal rather than cut."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    widths = [max([len(r[i]) for r in rows] + [len(max(col.split(), key=len))])
              for i, col in enumerate(columns)]
    table = Table(title=title, box=box.SIMPLE, padding=(0, 1))
    for col, width in zip(columns, widths, strict=True):
        table.add_column(col, min_width=width)
    for row in rows:
        table.add_row(*row)
    console = Console()
    # never crop a price: wider than the terminal rather than cut
    console.width = max(console.width, sum(widths) + 4 * len(widths) + 4)
    console.print(table)


@markets.command("add")
@click.argument("symbol")
@click.option("--price-decimals", type=click.IntRange(0, 18), required=True,
              help="A price unit is 10^-N quote units (USDC) per base unit.")
@click.option("--size-decimals", type=click.IntRange(0, 18), required=True,
              help="A size unit is 10^-N base units.")
@click.option("--oracle-price", required=True,
              help="Initial oracle price in quote units, e.g. 0.000104138 (exact at the scale).")
@click.option("--tick-size", type=click.IntRange(1), default=1, show_default=True,
              help="Price tick in price units.")
@click.option("--step-size", type=click.IntRange(1), default=1, show_default=True,
              help="Size step in size units.")
@click.option("--initial-margin-ppm", type=int, default=100_000, show_default=True)
@click.option("--maintenance-margin-ppm", type=int, default=50_000, show_default=True)
@click.option("--maker-fee-ppm", type=int, default=200, show_default=True)
@click.option("--taker-fee-ppm", type=int, default=500, show_default=True)
@click.option("--id", "market_id", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Market id (default: one more than the highest listed id).")
@click.option("--admin-key", default=None,
              help="Hex private key of the genesis admin "
                   "(default: dev account 0, a devnet's admin).")
@click.option("--rpc", default=None, help="L2 JSON-RPC URL (default: the group's --rpc).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def markets_add(ctx: click.Context, symbol: str, price_decimals: int, size_decimals: int,
                oracle_price: str, tick_size: int, step_size: int, initial_margin_ppm: int,
                maintenance_margin_ppm: int, maker_fee_ppm: int, taker_fee_ppm: int,
                market_id: int | None, admin_key: str | None, rpc: str | None,
                as_json: bool) -> None:
    """List a new market SYMBOL (a ListMarket transaction signed by the admin key)."""
    from decimal import Decimal, InvalidOperation

    import httpx

    from node.client import L2Client
    from node.client import RpcError as ClientRpcError
    from node.markets import Scales, list_market_params, list_market_tx, next_market_id, to_units
    from node.signing import Signer, dev_keys

    try:
        price = to_units(Decimal(oracle_price), price_decimals, tick_size)
    except InvalidOperation:
        raise click.BadParameter(f"not a number: {oracle_price}",
                                 param_hint="--oracle-price") from None
    if price is None or not 0 < price < 2**64:
        raise click.BadParameter("must be a positive multiple of the tick at --price-decimals",
                                 param_hint="--oracle-price")
    try:
        admin = Signer(bytes.fromhex(admin_key.removeprefix("0x"))) if admin_key \
            else Signer(dev_keys(1)[0])
    except ValueError:
        raise click.BadParameter("expected a 32-byte hex key", param_hint="--admin-key") from None
    with L2Client(rpc or ctx.obj["rpc"]) as client:
        try:
            listed = client.call("l2_getMarkets", "pending")
            mid = next_market_id(listed) if market_id is None else market_id
            tx = list_market_tx(mid, symbol, Scales(price_decimals, size_decimals), price,
                                tick_size, step_size, initial_margin_ppm,
                                maintenance_margin_ppm, maker_fee_ppm, taker_fee_ppm)
            tx = admin.list_market(client.domain, tx)
            result = client.call("l2_sendListMarket", list_market_params(tx))
        except (ClientRpcError, ValueError, httpx.HTTPError) as exc:
            raise click.ClickException(str(exc)) from None
    _emit(as_json, {**result, "symbol": symbol},
          [f"listed {symbol} as market {result['market']}: L2 tx {result['txHash']}"])


# -- positions ----------------------------------------------------------------------

POSITION_COLUMNS = ("symbol", "side", "size", "entry price", "oracle price", "value",
                    "unrealized PnL", "unsettled funding", "settled funding",
                    "liquidation price")
SUMMARY_COLUMNS = ("collateral", "equity", "initial margin", "maintenance margin",
                   "free collateral", "margin ratio %")


class _Address(click.ParamType):
    """An account address: 0x and 40 hex digits; mixed case must be the
    EIP-55 checksum (eth_utils)."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        from eth_utils import is_checksum_address, is_hex_address

        text = str(value)
        if not (text.startswith("0x") and is_hex_address(text)):
            self.fail(f"{text!r} is not an address: expected 0x followed by 40 hex digits",
                      param, ctx)
        digits = text[2:]
        if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(text):
            self.fail(f"{text!r} fails its EIP-55 checksum (mixed case)", param, ctx)
        return "0x" + digits.lower()


def _usdc_text(amount: Any) -> str:
    """USDC base units (a decimal string) as USDC."""
    from decimal import Decimal

    return f"{Decimal(int(amount)).scaleb(-6):f}"


def _position_rows(account: dict[str, Any],
                   markets: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Table cells of ``account``'s positions (l2_getAccount): size in base
    units, prices in quote units (the market's decimals, as `derivnet
    markets`), money in USDC; "-" for no liquidation price."""
    from decimal import Decimal

    from node.client import quantity

    rows = []
    for p in account["positions"]:
        m = markets[p["market"]]
        pd, sd = quantity(m["priceDecimals"]), quantity(m["sizeDecimals"])

        def price(v: Any, pd: int = pd) -> str:
            return "-" if v is None else f"{Decimal(int(v)).scaleb(-pd):f}"

        rows.append((str(p["symbol"]), str(p["side"]),
                     f"{Decimal(abs(int(p['size']))).scaleb(-sd):f}",
                     price(p["entryPrice"]), price(p["oraclePrice"]), _usdc_text(p["value"]),
                     _usdc_text(p["unrealizedPnl"]), _usdc_text(p["unsettledFunding"]),
                     _usdc_text(p.get("settledFunding", 0)), price(p["liquidationPrice"])))
    return rows


def _summary_row(account: dict[str, Any]) -> tuple[str, ...]:
    """Account totals in USDC and the margin ratio (maintenance margin /
    equity) in percent, "-" when unbounded (equity <= 0)."""
    from decimal import Decimal

    ratio = account["marginRatioPpm"]
    return (_usdc_text(account["collateral"]), _usdc_text(account["equity"]),
            _usdc_text(account["initialMargin"]), _usdc_text(account["maintenanceMargin"]),
            _usdc_text(account["freeCollateral"]),
            "-" if ratio is None else f"{Decimal(int(ratio)).scaleb(-4):f}")


@main.command()
@click.argument("address", type=_Address())
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw l2_getAccount answer.")
def positions(address: str, rpc: str, as_json: bool) -> None:
    """An account's positions (size, entry, oracle and liquidation prices, PnL,
    unsettled funding) and its margin summary, at the latest block."""
    from node.client import L2Client

    import httpx

    try:
        with L2Client(rpc) as client:
            account = client.call("l2_getAccount", address, "latest")
            listed = client.call("l2_getMarkets", "latest") if account["positions"] else []
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no node answering at {rpc}: {exc}") from None
    if as_json:
        import json

        click.echo(json.dumps(account, indent=2))
        return
    markets = {m["id"]: m for m in listed}
    if account["positions"]:
        _print_table(f"derivnet positions {address}", POSITION_COLUMNS,
                     _position_rows(account, markets))
    else:
        click.echo(f"{address} has no positions")
    _print_table("margin (USDC)", SUMMARY_COLUMNS, [_summary_row(account)])


# -- settlement commands --------------------------------------------------------

def _signer(account: int | None, private_key: str | None) -> object:
    from node.signing import Signer, dev_keys

    if private_key:
        return Signer(_parse_key(private_key, "--private-key"))
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


MONEY_FIELDS = ("amount",)
"""--json fields that are money (USDC base units): decimal strings."""


def _emit(as_json: bool, data: dict[str, object], lines: list[str]) -> None:
    """Print ``lines``, or with ``as_json`` ``data`` in the API's number
    convention (docs/protocol.md "Numbers"): money (MONEY_FIELDS) as decimal
    strings, other integers (ids, indexes, batches) as hex quantities."""
    import json

    if as_json:
        data = {k: (str(v) if k in MONEY_FIELDS else hex(v))
                if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in data.items()}
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


class _Quantity(click.ParamType):
    """A non-negative integer given in decimal or 0x-hex (the API's forms)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        try:
            n = int(text[2:], 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            self.fail(f"{value!r} is not a decimal or 0x-hex integer", param, ctx)
        if n < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return n


_QUANTITY = _Quantity()

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
@click.argument("amount", required=False)
@click.option("--id", "withdrawal_id", type=_QUANTITY, default=None,
              help="Resume withdrawal ID (sent earlier; decimal or 0x-hex, as --json prints "
                   "it): wait for it and finalize it on L1 instead of withdrawing again.")
@click.option("--to", "to", default=None, help="L1 recipient (default: the account).")
@_acct_opt
@_key_opt
@_rpc_opt
@_l1_opt
@click.option("--warp", is_flag=True,
              help="Devnet: warp L1 time over the challenge window instead of waiting.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait for finality.")
@_json_opt
def withdraw(amount: str | None, withdrawal_id: int | None, to: str | None, account: int | None,
             private_key: str | None, rpc: str, l1_rpc: str | None, warp: bool, timeout: float,
             as_json: bool) -> None:
    """Withdraw AMOUNT USDC: L2 withdrawal, wait for its batch's finality, prove and
    finalize on L1. Interrupted? `derivnet withdraw --id N` finishes withdrawal N
    (nothing is sent twice; an already paid one is reported as such)."""
    from rich.progress import BarColumn, Progress, TimeElapsedColumn

    from node import wallet
    from node.client import RpcError

    if (amount is None) == (withdrawal_id is None):
        raise click.UsageError("give either AMOUNT (a new withdrawal) or --id N (resume one)")
    if withdrawal_id is not None and to:
        raise click.UsageError("--to only applies to a new withdrawal")
    signer = _signer(account, private_key)
    value = _usdc(amount) if amount is not None else 0
    stack, client, w3 = _clients(rpc, l1_rpc)
    with stack:
        with Progress("[progress.description]{task.description}", BarColumn(),
                      TimeElapsedColumn(), disable=as_json) as bar:
            task = bar.add_task("withdrawing", total=1.0)

            def show(message: str, fraction: float | None) -> None:
                bar.update(task, description=message, completed=fraction or 0.0)

            try:
                if withdrawal_id is None:
                    r = wallet.withdraw(client, w3, signer, value,  # type: ignore[arg-type]
                                        bytes.fromhex(to[2:]) if to else None, warp=warp,
                                        timeout=timeout, progress=show)
                else:
                    r = wallet.finish_withdrawal(client, w3, signer,  # type: ignore[arg-type]
                                                 withdrawal_id, warp=warp, timeout=timeout,
                                                 progress=show)
            except (TimeoutError, LookupError, RuntimeError, RpcError) as exc:
                raise click.ClickException(str(exc)) from None
    usdc = f"{r.amount / 10**6:,.6f}".rstrip("0").rstrip(".")
    _emit(as_json, r.__dict__, [
        f"withdrawal #{r.withdrawal_id} of {usdc} USDC to {r.recipient}",
        (f"L2 tx {r.l2_tx}, " if r.l2_tx else "") + f"batch {r.batch}",
        "already paid on L1" if r.already_paid else f"finalized on L1: tx {r.l1_tx}"])


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


@main.command()
@click.option("--l1-rpc", required=True, help="L1 JSON-RPC URL (the devnet's L1, e.g. "
              "http://127.0.0.1:8546): the only source the replica reads.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8547, show_default=True, type=click.IntRange(1, 65535),
              help="The replica's read-only L2 JSON-RPC port.")
@click.option("--datadir", default=None, type=click.Path(file_okay=False),
              help="Where the derived chain is stored (LevelDB); a restart resumes from it. "
                   "Omit to keep it in memory.")
@click.option("--genesis", "genesis_path", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="The devnet's genesis file (default: the packaged node/genesis.json); "
                   "its state root must equal the Rollup's genesis root.")
@click.option("--rollup", default=None,
              help="Rollup contract address (default: the first Rollup the genesis sequencer "
                   "created on L1).")
@click.option("--poll-interval", default=0.5, show_default=True,
              type=click.FloatRange(0.05, 3600), help="Seconds between L1 polls.")
@click.option("--sig-workers", default=0, show_default=True, type=click.IntRange(0, 64),
              help="Processes that prepare the next batches while one executes: split and "
                   "hash them, recover their signatures (0: all in the main process).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def replica(l1_rpc: str, host: str, port: int, datadir: str | None, genesis_path: str | None,
            rollup: str | None, poll_interval: float, sig_workers: int, verbose: bool) -> None:
    """Derive the L2 chain from L1 alone and serve it read-only over JSON-RPC."""
    from node.replica import ReplicaConfig, ReplicaError, run_replica

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ReplicaConfig(l1_rpc=l1_rpc, host=host, port=port, datadir=datadir,
                           genesis_path=genesis_path, rollup=rollup, poll_interval=poll_interval,
                           sig_workers=sig_workers)

    def ready(r: Any) -> None:
        click.echo(f"derivnet replica ready: L2 JSON-RPC http://{host}:{port} (read-only), "
                   f"L1 {l1_rpc}, Rollup {r.deployment.rollup}, derived L2 block "
                   f"{r.chain.head.number}" + (f", datadir {datadir}" if datadir else ""))
        sys.stdout.flush()

    from node.runtime import tune_gc

    tune_gc()
    try:
        run_replica(config, ready)
    except ReplicaError as exc:
        raise click.ClickException(str(exc)) from None
    except BaseException as exc:
        if not _is_interrupt(exc):
            raise
        click.echo("stopped")


def _node_call(rpc: str, method: str, *params: Any) -> Any:
    """One L2 JSON-RPC call for a CLI command; ClickException on a dead node
    or an error answer."""
    import httpx

    from node.client import L2Client, RpcError

    try:
        with L2Client(rpc) as client:
            return client.call(method, *params)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no node answering at {rpc}: {exc}") from None
    except RpcError as exc:
        raise click.ClickException(f"{method}: {exc}") from None


@main.command()
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def disputes(rpc: str, as_json: bool) -> None:
    """List the dispute games (l2_getDisputes)."""
    import json

    games = _node_call(rpc, "l2_getDisputes")
    if as_json:
        click.echo(json.dumps(games, indent=2))
        return
    if not games:
        click.echo("no disputes")
        return
    click.echo(f"{'id':>4}  {'batch':>5}  {'status':<15} {'turn':<10} {'range':<15} challenger")
    for g in games:
        rng = f"{int(g['lo'], 16)}..{int(g['hi'], 16)}"
        click.echo(f"{int(g['id'], 16):>4}  {int(g['batchIndex'], 16):>5}  {g['status']:<15} "
                   f"{g['turn']:<10} {rng:<15} {g['challenger']}")


@main.command()
@click.argument("game_id", type=click.IntRange(0, 2**64 - 1))
@click.option("--rpc", default="http://127.0.0.1:8545", show_default=True, help="L2 JSON-RPC URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (l2_getDispute).")
def dispute(game_id: int, rpc: str, as_json: bool) -> None:
    """Show one dispute game: range tree, both parties' roots, clocks, bonds,
    every move with its L1 transaction and gas, and the verdict."""
    import json

    from prover.inspect import render

    game = _node_call(rpc, "l2_getDispute", hex(game_id))
    if game is None:
        raise click.ClickException(f"no dispute {game_id}")
    click.echo(json.dumps(game, indent=2) if as_json else render(game))


@main.command()
@click.option("--l1-rpc", required=True, help="L1 JSON-RPC URL: the only source it reads.")
@click.option("--key", "key_text", default=None,
              help="The challenger's private key (pays bonds and gas; default: dev account 9).")
@click.option("--mode", type=click.Choice(["honest", "malicious", "colluding", "silent"]),
              default="honest", show_default=True,
              help="honest: dispute wrong roots and play to the end; malicious: dispute correct "
                   "roots (it loses its bond); colluding: dispute wrong roots and play to lose; "
                   "silent: dispute wrong roots, then never move.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8548, show_default=True, type=click.IntRange(1, 65535),
              help="Its replica's read-only L2 JSON-RPC port.")
@click.option("--datadir", default=None, type=click.Path(file_okay=False),
              help="Where its replica stores the derived chain (default: in memory).")
@click.option("--genesis", "genesis_path", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="The devnet's genesis file (default: the packaged node/genesis.json).")
@click.option("--poll-interval", default=0.5, show_default=True,
              type=click.FloatRange(0.05, 3600), help="Seconds between rounds.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def challenger(l1_rpc: str, key_text: str | None, mode: str, host: str, port: int,
               datadir: str | None, genesis_path: str | None, poll_interval: float,
               verbose: bool) -> None:
    """Watch the Rollup from L1 data alone and dispute every wrong state root."""
    from node.replica import ReplicaConfig, ReplicaError
    from node.signing import dev_keys
    from prover.challenger import run_challenger

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = _parse_key(key_text, "--key") if key_text else dev_keys(10)[9]
    config = ReplicaConfig(l1_rpc=l1_rpc, host=host, port=port, datadir=datadir,
                           genesis_path=genesis_path, poll_interval=poll_interval)

    def ready(c: Any) -> None:
        click.echo(f"derivnet challenger ready ({mode}): {c.address}, L1 {l1_rpc}, Rollup "
                   f"{c.replica.deployment.rollup}; replica JSON-RPC http://{host}:{port}")
        sys.stdout.flush()

    try:
        run_challenger(config, key, mode, ready)
    except ReplicaError as exc:
        raise click.ClickException(str(exc)) from None
    except BaseException as exc:
        if not _is_interrupt(exc):
            raise
        click.echo("stopped")


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def l1(args: tuple[str, ...]) -> None:
    """Run the embedded L1 alone as a JSON-RPC node (like anvil); see `derivnet l1 --help`."""
    from l1_stub.__main__ import main as l1_main

    sys.exit(l1_main(list(args), prog="derivnet l1"))


if __name__ == "__main__":  # pragma: no cover
    main()
