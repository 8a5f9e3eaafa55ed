"""Threads for meshgroup's interop tests: stock LXMRouter messages carrying LXMF's reply and
reaction fields (FIELD_REPLY_TO, FIELD_REPLY_QUOTE, FIELD_REACTION), and what each router got."""
import LXMF

from peer_core import INBOX, LOCK, lxmf_destination, send_and_wait, wait_for


def cmd_send_threaded(c):
    """Sends like `send`, with a reply (`reply_to` hash hex, `quote` text), a reaction (`react_to`
    hash hex, `emoji`), an image or audio of `image_len` / `audio_len` bytes in the fields, as
    MeshChatX, Columba and Ratspeak do."""
    router, local, dest = lxmf_destination(c)
    fields = {}
    if c.get("reply_to"):
        fields[LXMF.FIELD_REPLY_TO] = bytes.fromhex(c["reply_to"])
    if c.get("quote"):
        fields[LXMF.FIELD_REPLY_QUOTE] = c["quote"].encode()
    if c.get("image_len"):
        fields[LXMF.FIELD_IMAGE] = ["webp", bytes(range(256)) * (c["image_len"] // 256) + b"x" * (c["image_len"] % 256)]
    if c.get("audio_len"):
        fields[LXMF.FIELD_AUDIO] = [LXMF.AM_CODEC2_1200, b"a" * c["audio_len"]]
    if c.get("react_to"):
        fields[LXMF.FIELD_REACTION] = {LXMF.REACTION_TO: bytes.fromhex(c["react_to"]),
                                       LXMF.REACTION_CONTENT: c["emoji"].encode()}
    method = {"opportunistic": LXMF.LXMessage.OPPORTUNISTIC, "direct": LXMF.LXMessage.DIRECT}[c.get("method", "opportunistic")]
    m = LXMF.LXMessage(dest, local, c.get("content", "").encode(), b"", fields=fields, desired_method=method)
    send_and_wait(router, m, c)
    return {"state": m.state, "delivered": m.state == LXMF.LXMessage.DELIVERED, "hash": m.hash.hex()}


def cmd_inbox_fields(c):
    """Waits until router `as` holds `count` messages, then lists them with their fields as JSON."""
    name = c["as"]
    wait_for(lambda: len(INBOX[name]) >= c.get("count", 1), c.get("timeout", 30))
    with LOCK:
        return {"messages": [dict(m, fields=m["fields_plain"]) for m in INBOX[name]]}
