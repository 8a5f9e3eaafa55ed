"""The peer core: the state, helpers and base commands of peer.py's real Reticulum/LXMF peer
(rns 1.5.7, lxmf 1.2.1), imported by every cmds_*.py.

It holds the peer's one copy of its state (identities, links, routers, inboxes, bulk members),
the link and LXMF helpers, the protobuf field codec the raw-body commands share, and the fix of
RNS 1.5.7's Link.request race that peer.py applies at start.
"""
import os, sys, tempfile, threading, time

import RNS
import LXMF
from LXMF import LXStamper

TMP = tempfile.mkdtemp(prefix="meshgroup-peer-")
IDS = {}        # name -> RNS.Identity
LINKS = {}      # name -> RNS.Link
ROUTERS = {}    # name -> (LXMRouter, delivery destination)
INBOX = {}      # name -> [message dict]
SENT = {}       # message hash hex -> the LXMessage cmd_send handed over (its router may deliver it later)
LOCK = threading.Lock()


def wait_for(pred, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def start(port):
    d = os.path.join(TMP, "rns")
    os.makedirs(d, exist_ok=True)
    # MESHGROUP_PEER_QLEN_IN_DATA: the node's inbound data queue (RNS drops packets beyond it).
    qlen = os.environ.get("MESHGROUP_PEER_QLEN_IN_DATA")
    queue = f"  qlen_in_data = {int(qlen)}\n" if qlen else ""
    with open(os.path.join(d, "config"), "w") as f:
        f.write("[reticulum]\n  enable_transport = False\n  share_instance = No\n" + queue +
                "[logging]\n  loglevel = 2\n[interfaces]\n"
                "  [[meshgroup]]\n    type = TCPClientInterface\n    enabled = yes\n"
                f"    target_host = 127.0.0.1\n    target_port = {port}\n")
    # Logs go to stderr: stdout carries the JSON replies.
    level = int(os.environ.get("MESHGROUP_PEER_LOGLEVEL", RNS.LOG_WARNING))
    RNS.Reticulum(configdir=d, loglevel=level, logdest=lambda msg: sys.stderr.write(msg + "\n"))


def identity(name):
    if name not in IDS:
        IDS[name] = RNS.Identity()
    return IDS[name]


def recall(dest, timeout):
    """The identity behind a destination; asks for its path again every 2 s while waiting (a
    request sent before the interface is connected, or lost on the way, would otherwise stall)."""
    end = time.time() + timeout
    ident = RNS.Identity.recall(dest)
    while not ident and time.time() < end:
        RNS.Transport.request_path(dest)
        ident = wait_for(lambda: RNS.Identity.recall(dest), min(2, max(0.1, end - time.time())))
    return ident


def cmd_identity(c):
    i = identity(c["name"])
    return {"identity_hash": i.hash.hex(), "public_key": i.get_public_key().hex(),
            "lxmf_hash": RNS.Destination.hash(i, "lxmf", "delivery").hex()}


def cmd_recall(c):
    dest = bytes.fromhex(c["dest"])
    if c.get("wait_announce"):
        # wait for an announce heard after this command (not just a path answer)
        ident = wait_for(lambda: RNS.Identity.recall(dest), c.get("timeout", 20))
    else:
        ident = recall(dest, c.get("timeout", 20))
    if not ident:
        raise RuntimeError("identity not recalled")
    ad = RNS.Identity.recall_app_data(dest)
    return {"identity_hash": ident.hash.hex(), "app_data": ad.hex() if ad else ""}


def establish(dest, c):
    """Opens link c["link"] to `dest`, identified as c["as"] when given."""
    up = threading.Event()
    link = RNS.Link(dest, established_callback=lambda l: up.set())
    if not up.wait(c.get("timeout", 20)):
        link.teardown()
        raise RuntimeError("link not established")
    if c.get("as"):
        link.identify(identity(c["as"]))
    LINKS[c["link"]] = link
    return link


def link_to(c, *aspects):
    """Recalls c["dest"] (asking for its path) and links to it as a `meshchat` destination."""
    ident = recall(bytes.fromhex(c["dest"]), c.get("timeout", 20))
    if not ident:
        raise RuntimeError("no identity for destination")
    dest = RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "meshchat", *aspects)
    return {"link_id": establish(dest, c).link_id.hex()}


def cmd_link(c):
    return link_to(c, "group")


def link_request(link, path, data, timeout=30):
    """One link request, waited for: returns (response bytes, receipt, seconds) or raises. `timeout`
    None leaves RNS its own default, as clients that pass none do; the wait is bounded either way."""
    done, box = threading.Event(), {}

    def ok(r):
        box["resp"] = r.response
        done.set()

    def fail(r):
        box["failed"] = True
        done.set()

    t0 = time.time()
    receipt = link.request(path, data=data, response_callback=ok, failed_callback=fail, timeout=timeout)
    if not receipt:
        raise RuntimeError("request not sent")
    if not done.wait((timeout or 30) + 15):
        raise RuntimeError("no answer and no failure")
    if box.get("failed"):
        raise RuntimeError("request failed (timed out)")
    return bytes(box["resp"]), receipt, time.time() - t0


def cmd_request(c):
    link = LINKS[c["link"]]
    # Protobuf bodies always travel as bytes, b"" for an empty message: a nil body (None) asks
    # for the JSON dialect. "nil": true sends None.
    data = None if c.get("nil") else bytes.fromhex(c.get("data", ""))
    resp, receipt, secs = link_request(link, c["path"], data, c.get("timeout", 30))
    return {"response": resp.hex(), "secs": round(secs, 3), "link_status": link.status,
            "request_id": bytes(receipt.request_id).hex()}


def cmd_idle(c):
    time.sleep(c["secs"])
    return {}


def cmd_close(c):
    LINKS.pop(c["link"]).teardown()
    return {}


def cmd_stamp(c):
    stamp, value = LXStamper.generate_stamp(bytes.fromhex(c["material"]), c["cost"],
                                            expand_rounds=c.get("rounds", LXStamper.WORKBLOCK_EXPAND_ROUNDS))
    return {"stamp": stamp.hex(), "value": value}


def plain(v):
    """LXMF field values as JSON: bytes as {"hex": ...}, maps with string keys."""
    if isinstance(v, (bytes, bytearray)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def cmd_router(c):
    name = c["as"]
    # A returning user keeps their storage (and with it their ratchet keys): "storage" reuses one.
    router = LXMF.LXMRouter(storagepath=c.get("storage") or os.path.join(TMP, "lxmf-" + name),
                            enforce_stamps=c.get("enforce_stamps", False))
    local = router.register_delivery_identity(identity(name), display_name=c.get("display_name", name),
                                              stamp_cost=c.get("stamp_cost"))
    INBOX[name] = []

    def delivered(m):
        with LOCK:
            INBOX[name].append({
                "source": m.source_hash.hex(), "title": m.title.hex(), "content": m.content.hex(),
                "signature_validated": bool(m.signature_validated), "hash": m.hash.hex(),
                "method": m.method, "fields": {str(k): repr(v) for k, v in (m.fields or {}).items()},
                "fields_plain": {str(k): plain(v) for k, v in (m.fields or {}).items()},
            })

    router.register_delivery_callback(delivered)
    ROUTERS[name] = (router, local)
    # "announce": false is a client that has not announced yet: its key is only had by asking.
    if c.get("announce", True):
        router.announce(local.hash)
    return {"lxmf_hash": local.hash.hex()}


def cmd_announce(c):
    router, local = ROUTERS[c["as"]]
    router.announce(local.hash)
    return {}


def lxmf_destination(c):
    """Router c["as"], its delivery destination, and the OUT lxmf.delivery destination c["dest"]
    (its identity recalled, asking for the path, within c["timeout"], 20 s by default)."""
    router, local = ROUTERS[c["as"]]
    ident = recall(bytes.fromhex(c["dest"]), c.get("timeout", 20))
    if not ident:
        raise RuntimeError("no identity for lxmf destination")
    return router, local, RNS.Destination(ident, RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery")


def send_and_wait(router, m, c, wait=True):
    """Hands `m` to `router`; with `wait`, waits up to c["timeout"] (45 s) until it is delivered,
    failed or rejected. The caller reads m.state: a timeout leaves it where it got to."""
    router.handle_outbound(m)
    if wait:
        wait_for(lambda: m.state in (LXMF.LXMessage.DELIVERED, LXMF.LXMessage.FAILED,
                                     LXMF.LXMessage.REJECTED), c.get("timeout", 45))


def cmd_send(c):
    router, local, dest = lxmf_destination(c)
    method = {"opportunistic": LXMF.LXMessage.OPPORTUNISTIC, "direct": LXMF.LXMessage.DIRECT,
              "propagated": LXMF.LXMessage.PROPAGATED}[c.get("method", "opportunistic")]
    m = LXMF.LXMessage(dest, local, bytes.fromhex(c["content"]), bytes.fromhex(c.get("title", "")),
                       desired_method=method, include_ticket=c.get("include_ticket", False))
    send_and_wait(router, m, c, wait=c.get("wait", True))
    if m.hash:
        SENT[m.hash.hex()] = m
    return {"state": m.state, "delivered": m.state == LXMF.LXMessage.DELIVERED, "hash": m.hash.hex() if m.hash else "",
            "representation": m.representation, "stamp": m.stamp.hex() if m.stamp else ""}


def cmd_sent_states(c):
    """Where each message cmd_send handed over has got to, by hash: "delivered" (proven), "open"
    (its router still tries) or "failed"."""
    final = {LXMF.LXMessage.DELIVERED: "delivered", LXMF.LXMessage.FAILED: "failed", LXMF.LXMessage.REJECTED: "failed"}
    return {"states": {h: final.get(m.state, "open") for h, m in SENT.items()}}


def cmd_inbox(c):
    name = c["as"]
    want = c.get("count", 1)
    # "contains": wait instead for a message, from index "after" on, whose text holds this string
    # (when how many other messages arrive first is not the point).
    needle, after = c.get("contains", "").encode(), c.get("after", 0)
    if needle:
        ready = lambda: any(needle in bytes.fromhex(m["content"]) for m in INBOX[name][after:])
    else:
        ready = lambda: len(INBOX[name]) >= want
    wait_for(ready, c.get("timeout", 30))
    with LOCK:
        return {"messages": list(INBOX[name])}


# --- the fix of a race in RNS 1.5.7 ---

EARLY = {}      # (link id, request id) -> handle_response arguments of a response that beat its receipt
EARLY_LOCK = threading.Lock()


def patch_request_race():
    """Works around a race in RNS 1.5.7's Link.request: the request packet is sent *before* its
    RequestReceipt joins link.pending_requests, so a response from a fast server on loopback can
    arrive first and is dropped; the request then fails after its timeout. Here a response with no
    receipt yet is held until the receipt registers. peer.py applies it at start, unless MESHGROUP_PEER_UNPATCHED=1."""
    # `RNS.Link` is the class (RNS re-exports it), so take the module from sys.modules.
    link_module = sys.modules["RNS.Link"]
    Link, Receipt = link_module.Link, link_module.RequestReceipt
    if getattr(Link, "_meshgroup_race_patch", False):
        return
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


# --- protobuf fields, for the commands that build or read raw request bodies ---

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_field(num, raw):
    """One length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(raw)) + raw


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def pb_fields(buf):
    """(field number, value) of one protobuf message: varints and length-delimited only."""
    i, out = 0, []
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        out.append((num, v))
    return out


# --- bulk members: many lxmf.delivery members in one process (an LXMRouter holds one identity) ---

MEMBERS = {}   # identity hash hex -> Member
MLOCK = threading.Lock()


class Member:
    """A plain RNS lxmf.delivery destination that proves every packet and unpacks what arrives
    with the reference LXMF code. `got` holds one (time, signature valid, message hash hex,
    content bytes) per receipt; one that does not unpack is (time, False, "bad:" + why, b"")."""

    def __init__(self):
        self.ident = RNS.Identity()
        self.dest = RNS.Destination(self.ident, RNS.Destination.IN, RNS.Destination.SINGLE, "lxmf", "delivery")
        self.dest.set_proof_strategy(RNS.Destination.PROVE_ALL)
        self.got = []
        self.dest.set_packet_callback(self.on_packet)

    def on_packet(self, data, packet):
        try:
            m = LXMF.LXMessage.unpack_from_bytes(self.dest.hash + data)
            entry = (time.time(), bool(m.signature_validated), m.hash.hex(), bytes(m.content))
        except Exception as e:
            entry = (time.time(), False, "bad:" + str(e), b"")
        with MLOCK:
            self.got.append(entry)


def new_member():
    """A new bulk member, not announced yet; returns its identity hash hex."""
    m = Member()
    h = m.ident.hash.hex()
    MEMBERS[h] = m
    return h
