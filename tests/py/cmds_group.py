"""Peer commands for tests/interop_group.rs: watch a destination's live announces.

`recall` only tells what the peer knows now; to show that a change reaches *the next announce*,
these commands record every announce heard after `watch_announces`, path responses kept apart.
"""
import time

import RNS

from peer_core import LOCK, wait_for


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


