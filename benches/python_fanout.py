"""The Python reference for `meshgroup bench fanout`: one post prepared for N members with rns/lxmf.

Usage: python_fanout.py N [CONTENT] [ROUNDS]

For each of N member destinations it builds an LXMessage from one group identity (the same
content and attribution fields as the Rust bench), packs it (which signs it) and encrypts
`packed[16:]` for the member (`destination.encrypt`, as `RNS.Packet` does for an opportunistic
LXMF message). One process, so one core, as a Python relay runs. Member identities and their
destinations are made before the clock starts, which only flatters Python. Prints one JSON line;
`seconds` is the median of ROUNDS (default 1).
"""
import importlib.metadata
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import RNS
import LXMF

CONTENT = "a message of ordinary length, about as long as people write on a mesh chat"


def start_reticulum(tmp):
    # A real instance without interfaces, so ratchet and path lookups behave as in a running relay.
    d = os.path.join(tmp, "rns")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config"), "w") as f:
        f.write("[reticulum]\n  enable_transport = False\n  share_instance = No\n[logging]\n  loglevel = 1\n[interfaces]\n")
    RNS.Reticulum(configdir=d, loglevel=RNS.LOG_ERROR, logdest=lambda msg: sys.stderr.write(msg + "\n"))


def main():
    n = int(sys.argv[1])
    content = (sys.argv[2] if len(sys.argv) > 2 else CONTENT).encode()
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    tmp = tempfile.mkdtemp(prefix="meshgroup-pyfanout-")
    try:
        start_reticulum(tmp)
        group = RNS.Identity()
        source = RNS.Destination(group, RNS.Destination.IN, RNS.Destination.SINGLE, "lxmf", "delivery")
        members = [RNS.Destination(RNS.Identity(), RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery")
                   for _ in range(n)]
        # The attribution a meshgroup relay adds (FIELD_CUSTOM_TYPE / FIELD_CUSTOM_META).
        fields = {0xFB: "meshgroup.v1",
                  0xFD: {"s": b"\x11" * 16, "n": "alice", "h": b"\x22" * 32, "i": 4242, "k": "message"}}
        body = b"alice: " + content
        times, cpu = [], []
        plaintext_len = 0
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            for dest in members:
                lxm = LXMF.LXMessage(dest, source, body, b"", fields=dict(fields),
                                     desired_method=LXMF.LXMessage.OPPORTUNISTIC)
                lxm.timestamp = 1764000000.25
                lxm.pack()
                token = dest.encrypt(lxm.packed[LXMF.LXMessage.DESTINATION_LENGTH:])
                plaintext_len = len(lxm.packed) - LXMF.LXMessage.DESTINATION_LENGTH
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if not token:
                raise RuntimeError("encryption produced nothing")
        print(json.dumps({"members": n, "seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu), "rounds": rounds,
                          "per_member_us": statistics.median(times) / n * 1e6, "plaintext_len": plaintext_len,
                          "cores": 1, "rns": importlib.metadata.version("rns"),
                          "lxmf": importlib.metadata.version("lxmf")}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # RNS leaves threads behind; a clean interpreter exit would wait for them.
    os._exit(0)


if __name__ == "__main__":
    main()
