"""Peer commands for benches/fanout_e2e.py: peer_core's bulk members, announced in the background
and joined over the link API, and a compact report of when each first held a valid message
(cmds_fanout.py's member_inbox returns every receipt)."""
import threading, time

import RNS

from peer_core import MEMBERS, MLOCK, link_request, new_member, pb_field, recall, wait_for

BENCH = {"announcing": None}


def cmd_bench_members(c):
    """Creates N members and returns their hashes at once; the announces go out from a background
    thread, `pace` seconds apart (a burst on a fresh interface is held back), so the caller can
    add the members to the group meanwhile. `bench_announced` waits for that thread."""
    hashes = [new_member() for _ in range(c["n"])]
    dests = [MEMBERS[h].dest for h in hashes]

    def announce_all():
        for d in dests:
            d.announce()
            time.sleep(c.get("pace", 0.05))

    if c.get("announce", True):
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
        for t, ok, h, _ in got:
            if ok and h not in seen:
                seen[h] = t
        return sorted(seen.values())[want - 1] if len(seen) >= want else None

    def times():
        with MLOCK:
            return [t for t in (reached_at(m.got) for m in MEMBERS.values()) if t is not None]
    wait_for(lambda: len(times()) >= len(MEMBERS), c.get("timeout", 120), step=0.1)
    done = sorted(times())
    with MLOCK:
        receipts = sum(len(m.got) for m in MEMBERS.values())
        invalid = sum(1 for m in MEMBERS.values() for g in m.got if not g[1])
    return {"members": len(MEMBERS), "reached": len(done), "times": done, "receipts": receipts, "invalid": invalid}


def cmd_bench_join(c):
    """Every bench member joins the group over the link API, as a client would: a link to the
    group's meshchat.group destination, identify, /api/v1/join (and, for the members listed in
    `digest`, /api/v1/notifications/update with digest on), teardown; `concurrency` members at a
    time. Reports how many joined and how long the wave took."""
    ident = recall(bytes.fromhex(c["dest"]), c.get("timeout", 30))
    if not ident:
        raise RuntimeError("no identity for the group")
    gdest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", "group")
    todo = list(c.get("members") or MEMBERS.keys())
    digest = set(c.get("digest", []))
    stats = {"joined": 0, "failed": 0}
    lock = threading.Lock()

    def request(link, path, data):
        try:
            return link_request(link, path, data)[0]
        except RuntimeError:
            return None

    def join_one(h):
        up = threading.Event()
        link = RNS.Link(gdest, established_callback=lambda l: up.set())
        try:
            if not up.wait(30):
                return False
            link.identify(MEMBERS[h].ident)
            resp = request(link, "/api/v1/join", pb_field(1, ("m" + h[:6]).encode()))
            # A Response whose first field (error) is set failed; an ok one starts with the payload.
            if resp is None or bytes(resp)[:1] == b"\x0a":
                return False
            if h in digest and request(link, "/api/v1/notifications/update", b"\x10\x01") is None:
                return False
            return True
        finally:
            link.teardown()

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                h = todo.pop()
            ok = join_one(h)
            with lock:
                stats["joined" if ok else "failed"] += 1

    t0 = time.time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(c.get("concurrency", 8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(c.get("timeout_total", 600))
    return {"joined": stats["joined"], "failed": stats["failed"], "secs": round(time.time() - t0, 2)}


def cmd_bench_inbox(c):
    """The texts each bench member received, in order (for the members listed, or all)."""
    with MLOCK:
        keys = c.get("members") or list(MEMBERS.keys())
        return {"members": {h: [g[3].decode("utf-8", "replace") for g in MEMBERS[h].got] for h in keys}}


def cmd_bench_tally(c):
    """Without waiting: how many members hold at least `unique` distinct valid messages, how many
    hold more than that (a second, different copy of a post would show here), and how many
    receipts repeated a message already held (packet-level resends, which LXMF de-duplicates)."""
    want = c.get("unique", 1)
    with MLOCK:
        gots = [m.got for m in MEMBERS.values()]
        distinct = [len({h for _, ok, h, _ in got if ok}) for got in gots]
        repeats = sum(sum(1 for _, ok, _, _ in got if ok) - d for got, d in zip(gots, distinct))
    return {"reached": sum(1 for d in distinct if d >= want), "over": sum(1 for d in distinct if d > want), "repeats": repeats}
