"""Peer commands for the stamp defences (issue 13): random-stamp brute force over LXMF, and a junk
join flood over the link API that runs in the background while the test does something else."""
import os, threading, time

import LXMF
import RNS
import RNS.vendor.umsgpack as msgpack
from LXMF import LXStamper

from peer_core import LOCK, ROUTERS, identity, pb_field, pb_fields, recall


FLOOD = {"threads": [], "stop": False, "stats": {}}


def _error(resp):
    """(code, challenge) of a Response; code 0 = success."""
    for num, v in pb_fields(bytes(resp)):
        if num == 1:
            f = dict(pb_fields(v))
            return f.get(1, 0), f.get(4, b"")
    return 0, b""


def _weak(wb, cost):
    """A random stamp that does not meet `cost` (so a run is deterministic)."""
    while True:
        s = os.urandom(32)
        if LXStamper.stamp_value(wb, s) < cost:
            return s


def cmd_send_random_stamps(c):
    """Sends `n` posts as raw opportunistic packets, each with a random 32-byte stamp in place of
    the router's own (one that meets cost N with probability 2^-N); with `weak`, only stamps below
    `cost`, so that a run is deterministic (each takes a 3000-round workblock, about 0.7 s)."""
    router, local = ROUTERS[c["as"]]
    ident = recall(bytes.fromhex(c["dest"]), 20)
    dest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery")
    for i in range(c["n"]):
        m = LXMF.LXMessage(dest, local, ("junk %d %s" % (i, os.urandom(4).hex())).encode(), b"",
                           desired_method=LXMF.LXMessage.OPPORTUNISTIC)
        m.pack()
        payload = msgpack.unpackb(m.packed[96:])[:4]
        stamp = _weak(LXStamper.stamp_workblock(m.hash), c["cost"]) if c.get("weak") else os.urandom(32)
        payload.append(stamp)
        RNS.Packet(dest, (m.packed[:96] + msgpack.packb(payload))[16:]).send()
        time.sleep(c.get("pace", 0.005))
    return {"sent": c["n"]}


def cmd_junk_flood(c):
    """Starts, in the background, one thread per attacker identity (fresh, named flood-N): a link
    to the group, identify, a join without a stamp for a challenge, then `n` joins with stamps below
    `cost` over that challenge, `burst` requests in flight at a time, as fast as answers come."""
    ident = recall(bytes.fromhex(c["dest"]), 20)
    gdest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", "group")
    FLOOD["stop"] = False

    def attacker(k):
        st = FLOOD["stats"].setdefault(k, {"codes": {}, "sent": 0, "answered": 0, "done": False, "stopped": False})
        end = time.time() + c.get("secs", 60)
        up = threading.Event()
        link = RNS.Link(gdest, established_callback=lambda l: up.set())
        if not up.wait(20):
            st["done"] = True
            return
        link.identify(identity("flood-%d" % k))
        done, box = threading.Event(), {}
        link.request("/api/v1/join", data=pb_field(1, b"x"), response_callback=lambda r: (box.update(r=r.response), done.set()),
                     failed_callback=lambda r: done.set(), timeout=30)
        done.wait(40)
        code, challenge = _error(box.get("r", b""))
        wb = LXStamper.stamp_workblock(challenge)
        slots = threading.Semaphore(c.get("burst", 4))

        def answered(r):
            code, _ = _error(r.response)
            with LOCK:
                st["codes"][code] = st["codes"].get(code, 0) + 1
                st["answered"] += 1
            slots.release()

        for _ in range(c["n"]):
            if FLOOD["stop"]:
                st["stopped"] = True
                break
            if time.time() > end:
                break
            slots.acquire(timeout=40)
            body = pb_field(1, b"x") + pb_field(3, challenge) + pb_field(4, _weak(wb, c["cost"]))
            link.request("/api/v1/join", data=body, response_callback=answered, failed_callback=lambda r: slots.release(), timeout=30)
            with LOCK:
                st["sent"] += 1
        st["done"] = True

    FLOOD["stats"] = {}
    FLOOD["threads"] = [threading.Thread(target=attacker, args=(k,), daemon=True) for k in range(c["attackers"])]
    for t in FLOOD["threads"]:
        t.start()
    return {}


def cmd_junk_status(c):
    """Per attacker: requests sent and answered, answers by error code (0 = joined), finished."""
    with LOCK:
        stats = {str(k): {"sent": v["sent"], "answered": v["answered"], "done": v["done"], "stopped": v["stopped"],
                          "codes": {str(code): n for code, n in v["codes"].items()}} for k, v in FLOOD["stats"].items()}
    return {"attackers": stats}


def cmd_junk_stop(c):
    FLOOD["stop"] = True
    for t in FLOOD["threads"]:
        t.join(c.get("timeout", 30))
    return cmd_junk_status(c)
