"""Peer commands for tests/interop_meshchat.rs: the clients that exist today.

- The JSON dialect as MeshChat's group-chat prototype speaks it. `SHAPES` rebuilds each call of its
  `GroupChatClient` (branch feature/group-chat, src/backend/group_chat/group_chat_client.py) from
  the shapes it documents: `link.request(path, data)` with `data` either None or
  `json.dumps({...}).encode("utf-8")`, and the answer parsed as JSON.
- A contact link, `lxma://<lxmf.delivery hash>:<public key hex>`, taken in as Sideband, Columba and
  MeshChatX do: the key is remembered for the hash, so the client can write at once, with no announce
  (`ignore_announces` keeps any announce of the group away, to show it).
- `race_probe`: how often an unpatched RNS 1.5.7 `Link.request` loses an answer.
"""
import json, sys, threading, time

import RNS

from peer_core import LINKS, LOCK, link_request


def _shape_join(display_name, challenge=None, stamp=None):
    body = {"display_name": display_name}
    # Not in the prototype: the keys meshgroup reads when a group has a join stamp cost.
    if challenge is not None:
        body["challenge"] = challenge
    if stamp is not None:
        body["stamp"] = stamp
    return "/api/v1/join", json.dumps(body).encode("utf-8")


SHAPES = {
    "get_info": lambda: ("/api/v1/info", None),
    "join": _shape_join,
    "leave": lambda: ("/api/v1/leave", None),
    "get_members": lambda page, limit: ("/api/v1/members", json.dumps({"page": page, "limit": limit}).encode("utf-8")),
    "get_messages": lambda order, limit, after_id: (
        "/api/v1/messages", json.dumps({"order": order, "limit": limit, "after_id": after_id}).encode("utf-8")),
    "send_message": lambda content: (
        "/api/v1/messages/send", json.dumps({"timestamp": time.time(), "content": content}).encode("utf-8")),
}


def _answer(raw):
    try:
        return {"json": json.loads(raw.decode("utf-8")), "raw": raw.hex()}
    except (UnicodeDecodeError, ValueError):
        return {"json": None, "raw": raw.hex()}


def cmd_mc(c):
    """Runs one GroupChatClient call, c["call"] with keyword arguments c["args"], on link c["link"]."""
    path, data = SHAPES[c["call"]](**c.get("args", {}))
    return _answer(link_request(LINKS[c["link"]], path, data, c.get("timeout"))[0])


def cmd_mc_raw(c):
    """Sends c["text"] (UTF-8) as the body of c["path"], or None with "nil": true; the answer as JSON."""
    data = None if c.get("nil") else c["text"].encode("utf-8")
    return _answer(link_request(LINKS[c["link"]], c["path"], data, c.get("timeout"))[0])


def cmd_remember_contact_link(c):
    """Takes in an lxma:// contact link: checks that the key gives the hash, and remembers it, as a
    client does on a scan. Says whether the peer knew the destination before (it must not)."""
    link = c["link_text"]
    if not link.startswith("lxma://"):
        raise RuntimeError("not an lxma:// link")
    dest_hex, key_hex = link[len("lxma://"):].split(":", 1)
    dest_hash, key = bytes.fromhex(dest_hex), bytes.fromhex(key_hex)
    known_before = RNS.Identity.recall(dest_hash) is not None
    ident = RNS.Identity(create_keys=False)
    ident.load_public_key(key)
    if RNS.Destination.hash(ident, "lxmf", "delivery") != dest_hash:
        raise RuntimeError("the link's key does not give its hash")
    RNS.Identity.remember(None, dest_hash, key)
    return {"known_before": known_before, "path_before": RNS.Transport.has_path(dest_hash)}


DEAF = set()  # destination hashes whose announces (and path responses) this peer ignores


def cmd_ignore_announces(c):
    """Makes this peer drop every announce of c["dest"], path responses included, as if none ever
    reached it: what it knows of the destination can then only come from elsewhere (a contact link)."""
    if not DEAF:
        validate = RNS.Identity.validate_announce

        def deaf_validate(packet, *args, **kw):
            if packet.destination_hash in DEAF:
                return False
            return validate(packet, *args, **kw)

        RNS.Identity.validate_announce = deaf_validate
    DEAF.add(bytes.fromhex(c["dest"]))
    return {}


ORPHANS = {"count": 0}


def _count_orphans():
    """Counts answers that arrive for no pending receipt (the ones the race loses), then hands them
    to the reference unchanged: this only watches, it fixes nothing."""
    link_module = sys.modules["RNS.Link"]
    Link = link_module.Link
    if getattr(Link, "_meshgroup_orphan_counter", False):
        return
    handle = Link.handle_response

    def counting(self, request_id, *args, **kw):
        if self.status == Link.ACTIVE and not any(p.request_id == request_id for p in self.pending_requests):
            with LOCK:
                ORPHANS["count"] += 1
        return handle(self, request_id, *args, **kw)

    Link.handle_response = counting
    Link._meshgroup_orphan_counter = True


def cmd_race_probe(c):
    """Sends c["count"] requests, one after another, on each of c["links"] at once (a thread per
    link), each with timeout c["timeout"]; the body is c["data"] (hex) or None with "nil". Reports
    the answers, the requests that failed, and the answers the reference dropped as orphans."""
    _count_orphans()
    data = None if c.get("nil") else bytes.fromhex(c.get("data", ""))
    with LOCK:
        orphans_before = ORPHANS["count"]
    stats = {"answered": 0, "failed": 0, "secs": []}

    def run(link):
        for _ in range(c["count"]):
            t0 = time.time()
            try:
                link_request(link, c["path"], data, c.get("timeout", 3))
                with LOCK:
                    stats["answered"] += 1
                    stats["secs"].append(time.time() - t0)
            except RuntimeError:
                with LOCK:
                    stats["failed"] += 1

    threads = [threading.Thread(target=run, args=(LINKS[name],)) for name in c["links"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = sorted(stats["secs"]) or [0]
    with LOCK:
        orphans = ORPHANS["count"] - orphans_before
    return {"answered": stats["answered"], "failed": stats["failed"], "orphans": orphans,
            "median_ms": round(1000 * secs[len(secs) // 2], 2), "max_ms": round(1000 * secs[-1], 2),
            "patched": bool(getattr(sys.modules["RNS.Link"].Link, "_meshgroup_race_patch", False))}
