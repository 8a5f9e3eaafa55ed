"""Commands for tests/interop_transport.rs."""
import threading, time

import RNS

from peer_core import LINKS, cmd_request, wait_for


# request_id -> how the response arrived, recorded by a wrapper around the reference's own
# Link.response_resource_concluded (the callback RNS passes to Resource.accept for responses).
RESPONSE_RESOURCES = {}
_orig_response_resource_concluded = RNS.Link.response_resource_concluded


def _recording_response_resource_concluded(self, resource):
    RESPONSE_RESOURCES[bytes(resource.request_id or b"")] = {
        "status": resource.status, "total_size": resource.total_size, "transfer_size": resource.size,
        "parts": resource.total_parts,
    }
    return _orig_response_resource_concluded(self, resource)


RNS.Link.response_resource_concluded = _recording_response_resource_concluded


def cmd_request_traced(c):
    """Like `request`, and says whether the response came as a Resource, with the link's MTU/MDU."""
    link = LINKS[c["link"]]
    out = cmd_request(dict(c, timeout=c.get("timeout", 60)))
    res = RESPONSE_RESOURCES.get(bytes.fromhex(out["request_id"]))
    out.update({"via_resource": res is not None and res["status"] == RNS.Resource.COMPLETE,
                "resource": res or {}, "link_mtu": link.get_mtu(), "link_mdu": link.get_mdu()})
    return out


def cmd_link_status(c):
    link = LINKS[c["link"]]
    return {"status": link.status, "active": link.status == RNS.Link.ACTIVE}


def cmd_known(c):
    """How many of the given destinations Python already knows (from announces or path answers)."""
    dests = [bytes.fromhex(h) for h in c["dests"]]
    known = [d.hex() for d in dests if RNS.Identity.recall(d)]
    # Announces the reference is holding back under ingress control (bursts on a new interface).
    held = sum(len(getattr(i, "held_announces", {}) or {}) for i in RNS.Transport.interfaces)
    return {"known": len(known), "total": len(dests), "held_announces": held}


def cmd_has_path(c):
    d = bytes.fromhex(c["dest"])
    return {"has_path": RNS.Transport.has_path(d), "hops": RNS.Transport.hops_to(d) if RNS.Transport.has_path(d) else None}


def cmd_forget(c):
    """Drops what this peer knows about a destination, so the next link must ask for a path again."""
    d = bytes.fromhex(c["dest"])
    if RNS.Transport.has_path(d):
        RNS.Transport.expire_path(d)
    return {}


def cmd_paths(c):
    """Asks for a path to each destination (`gap` s apart) and counts the answers within `timeout`."""
    dests = [bytes.fromhex(h) for h in c["dests"]]
    t0 = time.time()
    for d in dests:
        if not RNS.Transport.has_path(d):
            RNS.Transport.request_path(d)
            time.sleep(c.get("gap", 0.05))
    wait_for(lambda: all(RNS.Transport.has_path(d) for d in dests), c.get("timeout", 20))
    missing = [d.hex() for d in dests if not RNS.Transport.has_path(d)]
    return {"answered": len(dests) - len(missing), "total": len(dests), "missing": missing,
            "secs": round(time.time() - t0, 3)}


def cmd_burst(c):
    """Sends `n` requests for `path` on one link without waiting between them; returns each answer
    (hex) in the order they came, and how many never came within `timeout`."""
    link = LINKS[c["link"]]
    answers, lock, all_in = [], threading.Lock(), threading.Event()
    n = c["n"]

    def ok(r):
        with lock:
            answers.append(bytes(r.response).hex())
            if len(answers) == n:
                all_in.set()

    data = bytes.fromhex(c.get("data", ""))
    for _ in range(n):
        link.request(c["path"], data=data, response_callback=ok, timeout=c.get("timeout", 30))
    all_in.wait(c.get("timeout", 30))
    with lock:
        return {"answers": list(answers), "missing": n - len(answers)}
