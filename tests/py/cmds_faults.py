"""Hostile peers for the fault tests: decompression bombs and link floods."""
import os, threading, time

import RNS

from peer_core import LINKS, LOCK, identity, pb_field, recall


def _open(dest_hash, timeout):
    ident = recall(dest_hash, timeout)
    if not ident:
        raise RuntimeError("no identity for destination")
    return RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", "group")


def cmd_bomb(c):
    """Opens `links` anonymous links at once and sends on each a request for `path` whose body is
    `size` bytes of `fill` (zeros compress to almost nothing), or of random bytes when `random` is
    set. Returns how each request ended: "answered", "failed" (refused, timed out or cut off)."""
    dest = _open(bytes.fromhex(c["dest"]), c.get("timeout", 20))
    body = os.urandom(c["size"]) if c.get("random") else bytes([c.get("fill", 0)]) * c["size"]
    outcomes, lock, done = [], threading.Lock(), threading.Semaphore(0)
    n = c.get("links", 1)

    def one():
        up = threading.Event()
        link = RNS.Link(dest, established_callback=lambda l: up.set())
        if not up.wait(20):
            with lock:
                outcomes.append("no_link")
            done.release()
            return
        end = threading.Event()
        box = {}
        link.set_link_closed_callback(lambda l: end.set())

        def ok(r):
            box["r"] = "answered"
            end.set()

        def fail(r):
            box["r"] = "failed"
            end.set()

        link.request(c.get("path", "/api/v1/info"), data=body, response_callback=ok, failed_callback=fail,
                     timeout=c.get("request_timeout", 60))
        end.wait(c.get("request_timeout", 60) + 10)
        with lock:
            outcomes.append(box.get("r", "closed" if link.status == RNS.Link.CLOSED else "pending"))
        link.teardown()
        done.release()

    t0 = time.time()
    for _ in range(n):
        threading.Thread(target=one, daemon=True).start()
    for _ in range(n):
        done.acquire(timeout=c.get("request_timeout", 60) + 40)
    with lock:
        return {"outcomes": list(outcomes), "secs": round(time.time() - t0, 3)}


def cmd_link_flood(c):
    """Opens `n` links to the group destination, identified as `as` when given, and keeps them as
    `prefix`-0, -1, ...; returns how many came up."""
    dest = _open(bytes.fromhex(c["dest"]), c.get("timeout", 20))
    ups, links = [], []
    for _ in range(c["n"]):
        up = threading.Event()
        ups.append(up)
        links.append(RNS.Link(dest, established_callback=lambda l, up=up: up.set()))
        time.sleep(c.get("gap", 0.005))
    for up in ups:
        up.wait(c.get("timeout", 20))
    if c.get("as"):
        for l in links:
            if l.status == RNS.Link.ACTIVE:
                l.identify(identity(c["as"]))
    for i, l in enumerate(links):
        LINKS[f'{c.get("prefix", "flood")}-{i}'] = l
    return {"established": sum(1 for up in ups if up.is_set())}


def cmd_links_open(c):
    """How many of the links named `prefix`-N are still active."""
    p = c.get("prefix", "flood") + "-"
    return {"open": sum(1 for k, l in LINKS.items() if k.startswith(p) and l.status == RNS.Link.ACTIVE)}


def cmd_links_close(c):
    """Tears down the links named `prefix`-N."""
    p = c.get("prefix", "flood") + "-"
    names = [k for k in LINKS if k.startswith(p)]
    for k in names:
        LINKS.pop(k).teardown()
    return {"closed": len(names)}


PROBE = {"stop": None, "thread": None, "samples": []}


def cmd_probe_start(c):
    """A legitimate member at work in the background, on link `link`: every `period` seconds an
    /api/v1/info, then a post (/api/v1/messages/send), each timed; see probe_stop."""
    link = LINKS[c["link"]]
    stop = threading.Event()
    PROBE["stop"], PROBE["samples"] = stop, []

    def timed(path, data):
        done, box = threading.Event(), {}
        t0 = time.time()
        # Answered without an error (a Response whose field 1, the error, is absent).
        ok = lambda r: box.update(ok=bytes(r.response or b"")[:1] != b"\x0a")
        link.request(path, data=data, response_callback=lambda r: (ok(r), done.set()),
                     failed_callback=lambda r: done.set(), timeout=c.get("timeout", 15))
        done.wait(c.get("timeout", 15) + 5)
        with LOCK:
            PROBE["samples"].append({"t": t0, "path": path, "ok": bool(box.get("ok")), "secs": time.time() - t0})

    def run():
        i = 0
        while not stop.is_set():
            timed("/api/v1/info", b"")
            body = pb_field(1, ("probe %d" % i).encode()) + pb_field(5, os.urandom(16))
            timed("/api/v1/messages/send", body)
            i += 1
            stop.wait(c.get("period", 0.5))

    PROBE["thread"] = threading.Thread(target=run, daemon=True)
    PROBE["thread"].start()
    return {}


def cmd_probe_stop(c):
    """Stops the probe; returns its samples (start time, path, answered, seconds)."""
    if PROBE["stop"]:
        PROBE["stop"].set()
        PROBE["thread"].join(c.get("timeout", 30))
    with LOCK:
        return {"samples": list(PROBE["samples"])}
