"""Many LXMF members in one process: plain RNS lxmf.delivery destinations that prove every packet
and unpack what arrives with the reference LXMF code (an LXMRouter holds only one identity)."""
import threading, time

MEMBERS = {}   # identity hash hex -> {"dest": Destination, "got": [(time, message hash hex, content hex)]}
MLOCK = threading.Lock()


def _receiver(ident_hex, dest):
    def on_packet(data, packet):
        try:
            m = LXMF.LXMessage.unpack_from_bytes(dest.hash + data)
            entry = (time.time(), m.hash.hex(), m.content.hex(), bool(m.signature_validated))
        except Exception as e:
            entry = (time.time(), "bad:" + str(e), "", False)
        with MLOCK:
            MEMBERS[ident_hex]["got"].append(entry)
    return on_packet


def cmd_members(c):
    """Creates N members, announces them (paced), returns their identity hashes."""
    out = []
    for _ in range(c["n"]):
        ident = RNS.Identity()
        dest = RNS.Destination(ident, RNS.Destination.IN, RNS.Destination.SINGLE, "lxmf", "delivery")
        dest.set_proof_strategy(RNS.Destination.PROVE_ALL)
        h = ident.hash.hex()
        MEMBERS[h] = {"dest": dest, "got": []}
        dest.set_packet_callback(_receiver(h, dest))
        dest.announce()
        out.append(h)
        time.sleep(c.get("pace", 0.01))
    return {"members": out}


def cmd_member_inbox(c):
    """Waits until every member (or those listed in `members`) holds `unique` distinct messages (or
    the timeout), then reports."""
    want = c.get("unique", 1)
    def done():
        with MLOCK:
            waiting = [MEMBERS[h] for h in c["members"]] if c.get("members") else MEMBERS.values()
            return all(len({g[1] for g in m["got"]}) >= want for m in waiting)
    wait_for(done, c.get("timeout", 60), step=0.2)
    with MLOCK:
        return {"members": {h: [{"t": g[0], "hash": g[1], "content": g[2], "valid": g[3]} for g in m["got"]]
                            for h, m in MEMBERS.items()}}


def cmd_reannounce_members(c):
    for m in MEMBERS.values():
        m["dest"].announce()
        time.sleep(c.get("pace", 0.01))
    return {}
