"""Peer commands for tests/interop_fanout.rs: many LXMF members in one process (peer_core's bulk
members), announced at once, and everything each one received."""
import time

from peer_core import MEMBERS, MLOCK, new_member, wait_for


def cmd_members(c):
    """Creates N members, announces them (paced), returns their identity hashes."""
    out = []
    for _ in range(c["n"]):
        h = new_member()
        MEMBERS[h].dest.announce()
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
            return all(len({g[2] for g in m.got}) >= want for m in waiting)
    wait_for(done, c.get("timeout", 60), step=0.2)
    with MLOCK:
        return {"members": {h: [{"t": t, "hash": mh, "content": content.hex(), "valid": valid} for t, valid, mh, content in m.got]
                            for h, m in MEMBERS.items()}}
