"""Peer commands for benches/fanout_e2e.py: many LXMF members announced in the background, and a
compact report of when each first held a valid message (member_inbox returns every receipt).

Self-contained (peer.py runs each cmds_*.py in its own scope, and this one loads before
cmds_fanout.py): members are plain RNS lxmf.delivery destinations with PROVE_ALL that unpack with
the reference LXMF code, as in cmds_fanout.py."""
import threading, time

BENCH = {"announcing": None}
BENCH_MEMBERS = {}   # identity hash hex -> [(time, valid signature, message hash hex)]
BENCH_LOCK = threading.Lock()


def _bench_receiver(ident_hex, dest):
    def on_packet(data, packet):
        try:
            m = LXMF.LXMessage.unpack_from_bytes(dest.hash + data)
            entry = (time.time(), bool(m.signature_validated), m.hash.hex())
        except Exception:
            entry = (time.time(), False, "")
        with BENCH_LOCK:
            BENCH_MEMBERS[ident_hex].append(entry)
    return on_packet


def cmd_bench_members(c):
    """Creates N members and returns their hashes at once; the announces go out from a background
    thread, `pace` seconds apart (a burst on a fresh interface is held back), so the caller can
    add the members to the group meanwhile. `bench_announced` waits for that thread."""
    hashes, dests = [], []
    for _ in range(c["n"]):
        ident = RNS.Identity()
        dest = RNS.Destination(ident, RNS.Destination.IN, RNS.Destination.SINGLE, "lxmf", "delivery")
        dest.set_proof_strategy(RNS.Destination.PROVE_ALL)
        h = ident.hash.hex()
        BENCH_MEMBERS[h] = []
        dest.set_packet_callback(_bench_receiver(h, dest))
        hashes.append(h)
        dests.append(dest)

    def announce_all():
        for d in dests:
            d.announce()
            time.sleep(c.get("pace", 0.05))

    t = threading.Thread(target=announce_all, daemon=True)
    t.start()
    BENCH["announcing"] = t
    return {"members": hashes}


def cmd_bench_announced(c):
    t = BENCH["announcing"]
    if t is not None:
        t.join(c.get("timeout", 120))
    return {"done": t is None or not t.is_alive()}


def cmd_bench_reached(c):
    """Waits until every member holds `unique` distinct valid messages (or the timeout); reports, per
    member that got there, the time its `unique`-th distinct message arrived, sorted."""
    want = c.get("unique", 1)

    def reached_at(got):
        seen = {}
        for t, ok, h in got:
            if ok and h not in seen:
                seen[h] = t
        return sorted(seen.values())[want - 1] if len(seen) >= want else None

    def times():
        with BENCH_LOCK:
            return [t for t in (reached_at(got) for got in BENCH_MEMBERS.values()) if t is not None]
    wait_for(lambda: len(times()) >= len(BENCH_MEMBERS), c.get("timeout", 120), step=0.1)
    done = sorted(times())
    with BENCH_LOCK:
        receipts = sum(len(got) for got in BENCH_MEMBERS.values())
        invalid = sum(1 for got in BENCH_MEMBERS.values() for g in got if not g[1])
    return {"members": len(BENCH_MEMBERS), "reached": len(done), "times": done, "receipts": receipts, "invalid": invalid}
