"""Peer commands for tests/interop_hosting.rs: the server destination (`meshchat.groupserver`), and
linking to a group from a directory entry alone."""
import threading, time

import RNS

from peer_core import IDS, establish, link_to


def cmd_load_identity(c):
    """Uses a given private key (hex, 64 bytes) as identity `name`, so a test knows its hash beforehand."""
    IDS[c["name"]] = RNS.Identity.from_bytes(bytes.fromhex(c["private_key"]))
    return {"identity_hash": IDS[c["name"]].hash.hex()}


def cmd_link_server(c):
    """Links to a hosting server's `meshchat.groupserver` destination (identity by path request)."""
    return link_to(c, "groupserver")


def cmd_link_from_entry(c):
    """Links to a group using only a directory entry's public key: no announce, no path request.
    The server re-announces its groups to every new peer, so the peer may already have heard this
    one: it forgets the identity and the path first, then reports what it knew, so the test can
    tell the link came up from the entry alone."""
    dest_hash = bytes.fromhex(c["dest"])
    RNS.Identity.known_destinations.pop(dest_hash, None)
    RNS.Transport.path_table.pop(dest_hash, None)
    known_before = RNS.Identity.recall(dest_hash) is not None
    path_before = RNS.Transport.has_path(dest_hash)
    ident = RNS.Identity(create_keys=False)
    ident.load_public_key(bytes.fromhex(c["public_key"]))
    dest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", "group")
    if dest.hash != dest_hash:
        raise RuntimeError(f"the entry's key gives {dest.hash.hex()}, not {dest_hash.hex()}")
    t0 = time.time()
    link = establish(dest, c)
    return {"link_id": link.link_id.hex(), "known_before": known_before, "path_before": path_before,
            "secs": round(time.time() - t0, 3)}


def cmd_try_link(c):
    """Tries to link to a group destination; says whether it came up (for a deleted group: no)."""
    dest_hash = bytes.fromhex(c["dest"])
    ident = RNS.Identity.recall(dest_hash)
    if not ident:
        return {"up": False, "reason": "unknown"}
    dest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", "group")
    up = threading.Event()
    link = RNS.Link(dest, established_callback=lambda l: up.set())
    ok = up.wait(c.get("timeout", 8))
    link.teardown()
    return {"up": ok}
