"""Peer commands for tests/client.rs: a fake `meshchat.group` whose answers are malformed.

Loaded by peer.py, so RNS, TMP and identity are peer.py's.
"""

FAKES = {}  # name -> RNS.Destination


def cmd_fake_group(c):
    """Registers a meshchat.group destination that answers every API path with `reply` (hex),
    bytes that are no protobuf Response, and announces it."""
    ident = identity(c["name"])
    dest = RNS.Destination(ident, RNS.Destination.IN, RNS.Destination.SINGLE, "meshchat", "group")
    reply = bytes.fromhex(c.get("reply", "ffffffff"))
    for path in ("/api/v1/info", "/api/v1/messages", "/api/v1/join", "/api/v1/members"):
        dest.register_request_handler(path, response_generator=lambda *a: reply, allow=RNS.Destination.ALLOW_ALL)
    FAKES[c["name"]] = dest
    dest.announce()
    return {"dest": dest.hash.hex()}
