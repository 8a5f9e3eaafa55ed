"""Propagation-node commands: identities that outlive a peer process, and syncing from a node."""
import time

import LXMF
import RNS

from peer_core import IDS, ROUTERS, identity, wait_for


def cmd_identity_key(c):
    return {"private_key": identity(c["name"]).get_private_key().hex()}


def cmd_identity_set(c):
    IDS[c["name"]] = RNS.Identity.from_bytes(bytes.fromhex(c["private_key"]))
    return {"identity_hash": IDS[c["name"]].hash.hex()}


def cmd_use_pn(c):
    router, local = ROUTERS[c["as"]]
    pn = bytes.fromhex(c["pn"])
    # The router reads the node's stamp cost from its announce data and gives a propagated send up
    # at once without it, so wait until that data is known (lxmd announces ~10 s after it starts).
    known = lambda: LXMF.LXMF.pn_announce_data_is_valid(RNS.Identity.recall_app_data(pn))
    end = time.time() + c.get("timeout", 60)
    while not known():
        if time.time() >= end:
            raise RuntimeError("no propagation node announce data heard")
        RNS.Transport.request_path(pn)
        wait_for(known, min(2, max(0.1, end - time.time())))
    router.set_outbound_propagation_node(pn)
    return {}


def cmd_sync_pn(c):
    """Asks the propagation node for our messages and waits until the transfer is done."""
    router, local = ROUTERS[c["as"]]
    router.request_messages_from_propagation_node(identity(c["as"]))
    wait_for(lambda: router.propagation_transfer_state in (LXMF.LXMRouter.PR_COMPLETE, LXMF.LXMRouter.PR_FAILED,
                                                            LXMF.LXMRouter.PR_NO_PATH, LXMF.LXMRouter.PR_NO_ACCESS)
               and router.propagation_transfer_state, c.get("timeout", 60), step=0.2)
    return {"state": router.propagation_transfer_state, "complete": router.propagation_transfer_state == LXMF.LXMRouter.PR_COMPLETE}
