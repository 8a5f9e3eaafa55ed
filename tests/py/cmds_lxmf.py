"""LXMF commands for meshgroup's interop tests: hand-made messages the stock router would not send."""
import os

import LXMF
import RNS
import RNS.vendor.umsgpack as msgpack
from LXMF import LXStamper

from peer_core import ROUTERS, recall, wait_for


def cmd_send_forged(c):
    """Packs a message as the stock router would, swaps in a forged stamp, sends it opportunistically
    as a raw packet, and reports whether the packet was proven (delivered)."""
    router, local = ROUTERS[c["as"]]
    dest_hash = bytes.fromhex(c["dest"])
    ident = recall(dest_hash, 20)
    dest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery")
    m = LXMF.LXMessage(dest, local, bytes.fromhex(c["content"]), b"", desired_method=LXMF.LXMessage.OPPORTUNISTIC)
    m.pack()
    payload = msgpack.unpackb(m.packed[96:])[:4]
    # A random stamp has value 0 half the time: take such a one, which no cost accepts.
    wb = LXStamper.stamp_workblock(m.hash)
    stamp = os.urandom(32)
    while LXStamper.stamp_value(wb, stamp) > 0:
        stamp = os.urandom(32)
    payload.append(stamp)
    packed = m.packed[:96] + msgpack.packb(payload)
    receipt = RNS.Packet(dest, packed[16:]).send()
    ok = wait_for(lambda: receipt.status == RNS.PacketReceipt.DELIVERED, c.get("timeout", 10))
    return {"delivered": bool(ok), "hash": m.hash.hex()}


def cmd_tickets(c):
    """The tickets the stock router holds for sending to a destination."""
    router, local = ROUTERS[c["as"]]
    t = router.get_outbound_ticket(bytes.fromhex(c["dest"]))
    return {"ticket": t.hex() if t else ""}


def cmd_stamp_cost(c):
    """Waits until the stock router has cached the stamp cost a destination announced."""
    router, local = ROUTERS[c["as"]]
    dest = bytes.fromhex(c["dest"])
    recall(dest, 20)
    cost = wait_for(lambda: router.get_outbound_stamp_cost(dest), c.get("timeout", 20))
    return {"cost": cost}
