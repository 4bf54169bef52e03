"""The dispute inspector: a game as a person wants to see it (issue 7 item 7).

``dispute_json(disputes, game_id)`` gathers a game's state (batch, parties,
bonds, range, clocks, status) and its history from the DisputeGame's events
(every move with its L1 transaction and gas) into one JSON object, the
answer of ``l2_getDispute`` and ``derivnet dispute ID --json``;
``render(d)`` draws it as text: the rounds of the range tree with the
defender's roots at each point, the segment the challenger kept, and the
verdict. Numbers follow the L2 port's convention: ids, steps, blocks,
seconds and gas as hex quantities; bonds (wei) as decimal strings.
"""

from __future__ import annotations

from typing import Any

from l1_stub.disputes import DisputeClient, Party, Status


def _hx(n: int) -> str:
    return hex(int(n))


def _b(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def dispute_json(disputes: DisputeClient, game_id: int, *, with_gas: bool = True) -> dict[str, Any]:
    """Everything about game ``game_id``. Raises IndexError if there is no
    such game."""
    if not 0 <= game_id < disputes.game_count():
        raise IndexError(f"no dispute {game_id}")
    g = disputes.get_game(game_id)
    defender_left, challenger_left = disputes.clocks(game_id)
    degree = disputes.degree()
    history = disputes.history(game_id, with_gas=with_gas)
    moves: list[dict[str, Any]] = []
    opened: dict[str, Any] = {}
    for ev in history.events:
        a = ev.args
        move: dict[str, Any] = {"kind": ev.kind, "l1Block": _hx(ev.l1_block),
                                "l1Tx": _b(ev.tx_hash), "gasUsed": _hx(ev.gas_used)}
        if ev.kind == "GameOpened":
            opened = a
            move.update(stepCount=_hx(a["step_count"]), startRoot=_b(a["start_root"]),
                        claimedRoot=_b(a["claimed_root"]))
        elif ev.kind == "Dissected":
            move.update(lo=_hx(a["lo"]), hi=_hx(a["hi"]))
        elif ev.kind == "Picked":
            move.update(segment=_hx(a["segment"]), lo=_hx(a["lo"]), hi=_hx(a["hi"]))
        elif ev.kind == "StepProved":
            move.update(step=_hx(a["step"]), postRoot=_b(a["post_root"]))
        elif ev.kind == "GameResolved":
            move.update(status=Status(int(a["status"])).name.lower(), winner=a["winner"],
                        paid=str(int(a["paid"])), burned=str(int(a["burned"])))
        moves.append(move)
    rounds = []
    for r in history.rounds(degree):
        picked = None
        if r.picked is not None:
            picked = {"segment": _hx(r.picked), "lo": _hx(r.positions[r.picked]),
                      "hi": _hx(r.positions[r.picked + 1])}
        rounds.append({"lo": _hx(r.lo), "hi": _hx(r.hi), "points": [_hx(p) for p in r.positions],
                       "defenderRoots": [_b(x) for x in r.roots], "picked": picked})
    return {
        "id": _hx(game_id),
        "batchIndex": _hx(g.batch_index),
        "batchId": _hx(g.batch_id),
        "status": g.status.name.lower(),
        "turn": "defender" if g.turn == Party.DEFENDER else "challenger",
        "defender": disputes.defender(),
        "challenger": g.challenger,
        "challengerBond": str(g.bond),
        "stepCount": _hx(int(opened.get("step_count", g.hi))),
        "startRoot": _b(opened["start_root"]) if opened else None,
        "claimedRoot": _b(opened["claimed_root"]) if opened else None,
        "range": {"lo": _hx(g.lo), "hi": _hx(g.hi), "rootLo": _b(g.root_lo),
                  "rootHi": _b(g.root_hi)},
        "clocks": {"defender": _hx(defender_left), "challenger": _hx(challenger_left)},
        "dissectionDegree": _hx(degree),
        "rounds": rounds,
        "moves": moves,
        "gasUsed": _hx(sum({m["l1Tx"]: int(m["gasUsed"], 16) for m in moves}.values())),
    }


def list_json(disputes: DisputeClient) -> list[dict[str, Any]]:
    """One summary row per game (no history): id, batch, status, turn, range."""
    out = []
    for gid in range(disputes.game_count()):
        g = disputes.get_game(gid)
        out.append({"id": _hx(gid), "batchIndex": _hx(g.batch_index), "status": g.status.name.lower(),
                    "turn": "defender" if g.turn == Party.DEFENDER else "challenger",
                    "challenger": g.challenger, "lo": _hx(g.lo), "hi": _hx(g.hi)})
    return out


def _short(root: str) -> str:
    return root[:10] + ".." + root[-4:]


def render(d: dict[str, Any]) -> str:
    """``dispute_json`` as text for a terminal."""
    n = lambda v: int(v, 16)  # noqa: E731
    lines = [
        f"dispute {n(d['id'])} against batch {n(d['batchIndex'])} (id {n(d['batchId'])}): "
        f"{d['status']}" + (f", {d['turn']} to move" if d["status"] == "active" else ""),
        f"  defender   {d['defender']}  clock {n(d['clocks']['defender'])} s left",
        f"  challenger {d['challenger']}  clock {n(d['clocks']['challenger'])} s left, "
        f"bond {int(d['challengerBond']) / 1e18:g} ETH",
        f"  claim: after step {n(d['stepCount'])} the root is not {d['claimedRoot']}",
        f"  start root (agreed) {d['startRoot']}",
        f"  dissection degree {n(d['dissectionDegree'])}",
    ]
    for i, r in enumerate(d["rounds"]):
        pts = [n(p) for p in r["points"]]
        lines.append(f"  round {i + 1}: steps {n(r['lo'])}..{n(r['hi'])}")
        roots = ["(agreed)"] + [_short(x) for x in r["defenderRoots"]] + ["(disputed)"]
        picked = r["picked"]
        for j, (p, root) in enumerate(zip(pts, roots, strict=True)):
            mark = ""
            if picked and j == n(picked["segment"]):
                mark = "  <- challenger keeps [{}, {}]".format(n(picked["lo"]), n(picked["hi"]))
            lines.append(f"      step {p:>6}  {root}{mark}")
    lines.append("  moves:")
    for m in d["moves"]:
        extra = ""
        if m["kind"] == "StepProved":
            extra = f" step {n(m['step'])} -> {_short(m['postRoot'])}"
        elif m["kind"] == "GameResolved":
            extra = (f" {m['status']}: {m['winner']} paid {int(m['paid']) / 1e18:g} ETH, "
                     f"burned {int(m['burned']) / 1e18:g} ETH")
        lines.append(f"    {m['kind']:<13} L1 block {n(m['l1Block']):>5}  gas {n(m['gasUsed']):>8,}"
                     f"  tx {m['l1Tx'][:12]}..{extra}")
    lines.append(f"  total gas {n(d['gasUsed']):,}")
    return "\n".join(lines)
