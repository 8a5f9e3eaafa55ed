#!/usr/bin/env python3
"""Seeds made by the Python reference (rns 1.5.7, lxmf 1.2.1): what a real peer puts on the wire.

Run with the test venv, from the repository root:
    target/pyenv/bin/python fuzz/seeds.py
Writes fuzz/corpus/<target>/py-<name>. A throw-away Reticulum instance with no interfaces is
started from a temporary directory, so nothing touches the network or ~/.reticulum.
"""

import os
import shutil
import sys
import tempfile

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
# The harness group of meshgroup::fuzzing (the vectors' peer identity) and the caller.
GROUP_KEY = bytes([0x33] * 32 + [0x44] * 32)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "py-" + name), "wb") as f:
        f.write(data)


def main():
    tmp = tempfile.mkdtemp(prefix="rns-seeds-")
    try:
        with open(os.path.join(tmp, "config"), "w") as f:
            f.write("[reticulum]\n  enable_transport = False\n  share_instance = No\n"
                    "  panic_on_interface_error = No\n\n[logging]\n  loglevel = 0\n\n[interfaces]\n")
        import RNS
        import RNS.vendor.umsgpack as umsgpack
        RNS.loglevel = RNS.LOG_CRITICAL
        RNS.Reticulum(configdir=tmp, loglevel=RNS.LOG_CRITICAL)
        import LXMF
        from LXMF.LXMessage import LXMessage
        import LXMF.LXStamper as LXStamper

        packb = umsgpack.packb
        group = RNS.Identity.from_bytes(GROUP_KEY)
        member = RNS.Identity.from_bytes(bytes([0x77] * 32 + [0x88] * 32))
        group_lxmf = RNS.Destination(group, RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery")
        member_lxmf = RNS.Destination(member, RNS.Destination.IN, RNS.Destination.SINGLE, "lxmf", "delivery")

        # lxmf_message: posts and commands as a stock client packs them, with the fields clients use.
        def message(name, content, title="", fields=None, stamp_cost=None, method=LXMessage.DIRECT):
            lxm = LXMessage(group_lxmf, member_lxmf, content, title, fields=fields, desired_method=method,
                            stamp_cost=stamp_cost)
            lxm.timestamp = 1700000000.25
            lxm.pack()
            write("lxmf_message", name, lxm.packed)
            return lxm

        message("post", "hello group", "greeting", {LXMF.FIELD_RENDERER: LXMF.RENDERER_MARKDOWN})
        message("join", "/join")
        message("name", "/name Alice of the Mesh")
        message("attachment", "file", fields={LXMF.FIELD_FILE_ATTACHMENTS: [["a.txt", b"abc"]],
                                              LXMF.FIELD_IMAGE: ["png", b"\x89PNG"],
                                              LXMF.FIELD_CUSTOM_TYPE: "meshgroup.v1",
                                              LXMF.FIELD_CUSTOM_META: {"s": b"\x01" * 16, "n": "bob", "i": 7}})
        message("stamped", "worked post", stamp_cost=2)
        message("ticket", "post with ticket", fields={LXMF.FIELD_TICKET: [1700000000.0 + 21 * 86400, b"\x0f" * 16]})

        # request_envelope: requests as RNS.Link.request packs them, and responses.
        TH = RNS.Identity.truncated_hash
        for path, data in [("/api/v1/info", None), ("/api/v1/join", b"\x0a\x05alice"),
                           ("/api/v1/messages", b"\x08\x05"), ("/get", [None, None]),
                           ("/api/v1/groups", {"x": 1})]:
            req = packb([1700000000.5, TH(path.encode("utf-8")), data])
            write("request_envelope", "req" + path.replace("/", "_"), req)
        write("request_envelope", "response", packb([TH(b"x"), b"\x12\x00"]))

        # announce: lxmf.delivery app data as LXMF makes it, and a propagation node's.
        write("announce", "delivery_named", packb([b"Alice", 8, [0]]))
        write("announce", "delivery_nil_cost", packb([b"Bob", None]))
        write("announce", "delivery_unicode", packb(["Zoë 🌐".encode("utf-8"), 255, True]))

        # stamp: a real LXStamper stamp for a message id, and a ticket stamp.
        mid = RNS.Identity.full_hash(b"fuzz seed message")
        stamp, value = LXStamper.generate_stamp(mid, 4)
        write("stamp", "lxstamper", mid + stamp)
        write("stamp", "ticket", mid + RNS.Identity.truncated_hash(b"\x0f" * 16 + mid))

        # propagation_response: what LXMRouter.message_get_request answers, in its envelope,
        # with a message encrypted to the harness group the way a propagation node stores it.
        lxm = LXMessage(group_lxmf, member_lxmf, "left on the node", "", desired_method=LXMessage.PROPAGATED)
        lxm.timestamp = 1700000000.75
        lxm.pack()
        lxmf_data = lxm.packed[:16] + group.encrypt(lxm.packed[16:])
        rid = TH(b"request")
        write("propagation_response", "list", packb([rid, [RNS.Identity.full_hash(lxmf_data), b"\x00" * 32]]))
        write("propagation_response", "messages", packb([rid, [lxmf_data]]))
        write("propagation_response", "error_no_identity", packb([rid, 0xf0]))
        write("propagation_response", "none", packb([rid, None]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
