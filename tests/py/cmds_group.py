"""Peer commands for tests/interop_group.rs: watch a destination's live announces.

`recall` only tells what the peer knows now; to show that a change reaches *the next announce*,
these commands record every announce heard after `watch_announces`, path responses kept apart.
Loaded by peer.py, so RNS, LOCK and wait_for are peer.py's.
"""

HEARD = {}  # destination hex -> [{"app_data": hex, "path_response": bool, "at": time}]


class AnnounceRecorder:
    receive_path_responses = True

    def __init__(self, aspect):
        self.aspect_filter = aspect

    def received_announce(self, destination_hash, announced_identity, app_data, announce_packet_hash, is_path_response):
        with LOCK:
            HEARD.setdefault(destination_hash.hex(), []).append(
                {"app_data": app_data.hex() if app_data else "", "path_response": bool(is_path_response), "at": time.time()})


def cmd_watch_announces(c):
    RNS.Transport.register_announce_handler(AnnounceRecorder(c.get("aspect", "meshchat.group")))
    return {}


def cmd_heard(c):
    """Announces of `dest` heard so far, from index `since`; waits up to `timeout` for one more."""
    dest, since = c["dest"], c.get("since", 0)

    def more():
        with LOCK:
            return len(HEARD.get(dest, [])) > since

    wait_for(more, c.get("timeout", 10))
    with LOCK:
        heard = list(HEARD.get(dest, []))
    return {"announces": heard[since:], "total": len(heard)}


EARLY = {}      # (link id, request id) -> handle_response arguments of a response that beat its receipt
EARLY_LOCK = threading.Lock()


def cmd_patch_request_race(c):
    """Works around a race in RNS 1.5.7's Link.request: the request packet is sent *before* its
    RequestReceipt joins link.pending_requests, so a response from a fast server on loopback can
    arrive first and is dropped; the request then fails after its timeout. Here a response with no
    receipt yet is held until the receipt registers. peer.py applies it at start; calling it again is a no-op."""
    # `RNS.Link` is the class (RNS re-exports it), so take the module from sys.modules.
    link_module = sys.modules["RNS.Link"]
    Link, Receipt = link_module.Link, link_module.RequestReceipt
    if getattr(Link, "_meshgroup_race_patch", False):
        return {"patched": "already"}
    handle = Link.handle_response
    init = Receipt.__init__

    def handle_response(self, request_id, *args, **kw):
        with EARLY_LOCK:
            if self.status == Link.ACTIVE and not any(p.request_id == request_id for p in self.pending_requests):
                EARLY[(self.link_id, request_id)] = (args, kw)
                return
        return handle(self, request_id, *args, **kw)

    def receipt_init(self, link, *args, **kw):
        with EARLY_LOCK:
            init(self, link, *args, **kw)
            early = EARLY.pop((link.link_id, self.request_id), None)
        if early:
            handle(link, self.request_id, *early[0], **early[1])

    Link.handle_response = handle_response
    Receipt.__init__ = receipt_init
    Link._meshgroup_race_patch = True
    return {"patched": "now"}
