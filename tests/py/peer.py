"""A real Reticulum/LXMF peer (rns 1.5.7, lxmf 1.2.1) for meshgroup's interop tests.

The Rust test drives it with one JSON command per stdin line and reads one JSON reply per stdout
line: {"ok": true, ...} or {"ok": false, "error": "..."}. Bytes travel as hex. Every wait is bounded.
The commands are the cmd_* functions of peer_core.py and of the modules tests/py/cmds_*.py.
"""
import importlib, json, os, sys, traceback

import peer_core


def reply(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def commands():
    """cmd_* of the peer core and of every cmds_*.py, by name; a name defined twice is an error."""
    here = os.path.dirname(os.path.abspath(__file__))
    modules = [peer_core] + [importlib.import_module(fn[:-3]) for fn in sorted(os.listdir(here))
                             if fn.startswith("cmds_") and fn.endswith(".py")]
    table = {}
    for mod in modules:
        for name, fn in vars(mod).items():
            if name.startswith("cmd_") and getattr(fn, "__module__", None) == mod.__name__:
                if name[4:] in table:
                    raise RuntimeError(f"{name} is defined twice")
                table[name[4:]] = fn
    return table


def main():
    table = commands()
    peer_core.start(int(sys.argv[1]))
    # RNS 1.5.7's Link.request can lose a response that beats its own registration on loopback.
    # MESHGROUP_PEER_UNPATCHED=1 runs the reference as shipped, as real clients do.
    if os.environ.get("MESHGROUP_PEER_UNPATCHED") != "1":
        peer_core.patch_request_race()
    reply(ok=True, ready=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            c = json.loads(line)
            if c["cmd"] == "quit":
                reply(ok=True)
                break
            reply(ok=True, **table[c["cmd"]](c))
        except Exception as e:  # report, keep serving
            reply(ok=False, error=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-800:])
    os._exit(0)


if __name__ == "__main__":
    main()
