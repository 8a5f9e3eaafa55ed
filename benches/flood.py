"""The flood and fault benchmark (issue 13): hostile load on loopback while a legitimate member keeps
posting and reading info, one scenario after another, each bounded.

Run through benches/flood.sh. Starts `meshgroup serve` (MESHGROUP_BIN, default the release build)
on free loopback ports with a fresh SQLite data dir and one group (join and post stamp cost 12, or
FLOOD_COST: bigposts wants 0, or the member's own router spends seconds on each stamp).
A Python peer process (tests/py/peer.py) is the member: joined over the link API, it requests
/api/v1/info and posts through /api/v1/messages/send every 0.5 s, each timed
(tests/py/cmds_faults.py probe_*). A second peer process (its own TCP connection, so its own
interface on the server) attacks. Scenarios, in order (FLOOD_SCENARIOS picks some):

  baseline  nothing but the member, 10 s: the latency and CPU every other figure is compared to
  links     1,000 unidentified links opened and held
  requests  10,000 requests (/api/v1/info) on one link, as fast as RNS sends them
  joins     2,000 join attempts with junk stamps at cost 12 (4 identities, 4 in flight each)
  posts     2,000 LXMF posts with random stamps from a member (cost 12)
  bomb      4 anonymous links at once, each a request whose body is 60 MB of zeros (bz2: a few KB);
            each waits FLOOD_BOMB_SECS (30) for its answer
  bigposts  3 posts of 950 KB to 99 members (the fan-out's memory; the members are plain
            lxmf.delivery destinations that prove what they get)
  pgstop    with FLOOD_PG=1 only (the run then uses a private PostgreSQL cluster): the database
            stopped for FLOOD_PG_SECS (20) seconds, then 5 s after it is back

For each: the server's CPU share (CPU seconds / wall seconds, of one core), its peak RSS sampled
every 50 ms during the scenario with its idle RSS at start as the baseline, and the member's
latency (median, p95, max, failures) against the baseline scenario's. Prints one JSON line.
Everything it starts is stopped before it exits; the wrapper bounds it with `timeout`.
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fanout_e2e as e2e  # noqa: E402  (the server's environment, start and CLI; Peer, proc_status, CHILDREN)

BIN = os.environ.get("MESHGROUP_BIN", e2e.BIN)
e2e.BIN = BIN
ALL = ["baseline", "links", "requests", "joins", "posts", "bomb", "bigposts", "pgstop"]


class Cluster:
    """A private PostgreSQL cluster (initdb in a temporary directory, its own port), so the shared
    server other work uses stays up when this one is stopped. As root it belongs to `postgres`."""

    def __init__(self, port):
        import glob
        import subprocess
        import tempfile
        bins = glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if not bins:
            raise RuntimeError("FLOOD_PG=1 needs PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin, self.port = os.path.dirname(bins[0]), port
        self.dir = tempfile.mkdtemp(prefix="meshgroup-flood-pg-")
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "postgres", self.dir], check=True)
        self.run("initdb", "-D", self.dir + "/data", "-A", "trust", "-U", "postgres")
        self.up()

    def run(self, tool, *args):
        import subprocess
        cmd = [os.path.join(self.bin, tool), *args]
        subprocess.run((["runuser", "-u", "postgres", "--"] if self.root else []) + cmd, check=True, capture_output=True)

    def up(self):
        self.run("pg_ctl", "-D", self.dir + "/data", "-w", "-l", self.dir + "/log",
                 "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def down(self):
        self.run("pg_ctl", "-D", self.dir + "/data", "-w", "-m", "fast", "stop")

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def close(self):
        import shutil
        try:
            self.down()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Sampler:
    """Peak RSS of a process, sampled every 50 ms until stopped."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, e2e.proc_status(self.pid)["VmRSS"])
            except OSError:
                return
            self.stop.wait(0.05)

    def done(self):
        self.stop.set()
        self.t.join()
        return self.peak


def latency(samples):
    """Per path (info, post): answered calls' median, p95 and max; failed calls (an error answer or
    none within 15 s) and the longest one took."""
    out = {}
    for path, key in (("/api/v1/info", "info"), ("/api/v1/messages/send", "post")):
        mine = [s for s in samples if s["path"] == path]
        secs = sorted(s["secs"] for s in mine if s["ok"])
        bad = [s["secs"] for s in mine if not s["ok"]]
        pick = lambda q: round(secs[min(len(secs) - 1, int(len(secs) * q))] * 1000, 1) if secs else None
        out[key] = {"n": len(mine), "median_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": round(secs[-1] * 1000, 1) if secs else None,
                    "failed": len(bad), "failed_max_ms": round(max(bad) * 1000, 1) if bad else None}
    return out


def refused(port):
    """The server's refusal and drop counters, by label set."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError as e:
        return {"error": str(e)}
    keep = ("meshgroup_work_refused_total", "meshgroup_responses_dropped_total", "meshgroup_stamps_checked_total", "meshgroup_transport_events_lost_total")
    lines = [l.rpartition(" ") for l in text.splitlines() if not l.startswith("#")]
    out = {name: float(v) for name, _, v in lines if name.startswith(keep)}
    # Requests the server answered, by outcome (summed over paths and dialects).
    for name, _, v in lines:
        if name.startswith("meshgroup_requests_total{"):
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0] if 'outcome="' in name else "?"
            key = f"meshgroup_requests_total{{outcome={outcome}}}"
            out[key] = out.get(key, 0.0) + float(v)
    return out


def main():
    wanted = os.environ.get("FLOOD_SCENARIOS", ",".join(ALL)).split(",")
    import tempfile
    data = tempfile.mkdtemp(prefix="meshgroup-flood-")
    rns_port, metrics_port = e2e.free_port(), e2e.free_port()
    env = e2e.server_env(data, rns_port, metrics_port)
    pg = Cluster(e2e.free_port()) if os.environ.get("FLOOD_PG") == "1" else None
    if pg:
        env["MESHGROUP_DATABASE__URL"] = pg.url()
    cli = e2e.cli_for(env, data)

    try:
        cost = os.environ.get("FLOOD_COST", "12")
        group = cli("group", "create", "--name", "Flood", "--join-stamp-cost", cost, "--post-stamp-cost", cost)
        gid, gdest, lxmf = str(group["id"]), group["group_destination_hash"], group["lxmf_destination_hash"]
        server = e2e.start_server(env, data, rns_port, os.path.join(data, "server.log"))
        member = e2e.Peer(rns_port)
        member.call(cmd="identity", name="member")
        cli("member", "add", gid, member.call(cmd="identity", name="member")["identity_hash"], "--name", "member")
        member.call(cmd="link", link="m", dest=gdest, **{"as": "member"})
        attacker = e2e.Peer(rns_port)
        idle_rss = e2e.proc_status(server.pid)["VmRSS"]
        results = {}

        def settle():
            """Waits (at most 60 s) until the server is quiet (under 0.1 core over 1 s): the backlog
            of one scenario must not be measured as the next one's."""
            end = time.time() + 60
            while time.time() < end:
                c0 = e2e.proc_status(server.pid)["cpu_s"]
                time.sleep(1)
                if e2e.proc_status(server.pid)["cpu_s"] - c0 < 0.1:
                    return

        def scenario(name, attack):
            settle()
            before = e2e.proc_status(server.pid)
            sampler = Sampler(server.pid)
            member.call(cmd="probe_start", link="m", period=0.5)
            t0 = time.time()
            detail = attack()
            wall = time.time() - t0
            probe = member.call(cmd="probe_stop")["samples"]
            peak = sampler.done()
            after = e2e.proc_status(server.pid)
            results[name] = {
                "wall_s": round(wall, 1),
                "cpu_share": round((after["cpu_s"] - before["cpu_s"]) / wall, 3),
                "rss_start_mib": round(before["VmRSS"], 1),
                "peak_rss_mib": round(peak, 1),
                "peak_above_idle_mib": round(peak - idle_rss, 1),
                "member": latency(probe),
                "attack": detail,
            }

        def wait_secs(secs):
            end = time.time() + secs
            while time.time() < end:
                time.sleep(0.2)
            return {}

        def links():
            r = attacker.call(cmd="link_flood", dest=gdest, n=1000, gap=0.002, prefix="anon", timeout=e2e.left(60))
            r["open_after"] = attacker.call(cmd="links_open", prefix="anon")["open"]
            attacker.call(cmd="links_close", prefix="anon")
            return r

        def requests():
            attacker.call(cmd="link", link="burst", dest=gdest)
            r = attacker.call(cmd="burst", link="burst", path="/api/v1/info", n=10000, timeout=e2e.left(30))
            return {"answered": len(r["answers"]), "missing": r["missing"]}

        def joins():
            attacker.call(cmd="junk_flood", dest=gdest, attackers=4, n=500, cost=12, burst=4, secs=e2e.left(120))
            end = time.time() + e2e.left(120)
            while time.time() < end:
                st = attacker.call(cmd="junk_status")["attackers"]
                if st and all(v["done"] for v in st.values()):
                    break
                time.sleep(0.5)
            st = attacker.call(cmd="junk_stop")["attackers"]
            codes = {}
            for v in st.values():
                for k, n in v["codes"].items():
                    codes[k] = codes.get(k, 0) + n
            return {"sent": sum(v["sent"] for v in st.values()), "answered": sum(v["answered"] for v in st.values()), "codes": codes}

        def posts():
            attacker.call(cmd="router", **{"as": "junker"})
            cli("member", "add", gid, attacker.call(cmd="identity", name="junker")["identity_hash"], "--name", "junker")
            time.sleep(1)
            r = attacker.call(cmd="send_random_stamps", **{"as": "junker"}, dest=lxmf, n=2000, pace=0.005)
            # The server works through what it was sent after the sender is done: that is part of it.
            t0 = time.time()
            settle()
            r["server_busy_after_s"] = round(time.time() - t0, 1)
            return r

        def bomb():
            return attacker.call(cmd="bomb", dest=gdest, links=4, size=60 * 1024 * 1024, request_timeout=float(os.environ.get("FLOOD_BOMB_SECS", "30")))

        def bigposts():
            ms = attacker.call(cmd="bench_members", n=99, pace=0.02, announce=True)["members"]
            for i, m in enumerate(ms):
                cli("member", "add", gid, m, "--name", f"m{i}")
            attacker.call(cmd="bench_announced", timeout=e2e.left(60))
            # Posted as stock clients post large messages: LXMF over a direct link, as a Resource.
            member.call(cmd="router", **{"as": "member"})
            sent = [member.call(cmd="send", **{"as": "member"}, dest=lxmf, content=os.urandom(950 * 1024).hex(), method="direct",
                                timeout=e2e.left(90))["delivered"] for _ in range(3)]
            # The copies are prepared and in transfer for a while after: keep sampling.
            wait_secs(20)
            return {"posts_delivered": sum(1 for d in sent if d), "members": len(ms)}

        def pgstop():
            secs = float(os.environ.get("FLOOD_PG_SECS", "20"))
            pg.down()
            t0 = time.time()
            wait_secs(secs)
            pg.up()
            back = time.time() - t0
            wait_secs(5)
            return {"stopped_s": round(back, 1), "then_s": 5}

        table = {"baseline": lambda: wait_secs(10), "links": links, "requests": requests, "joins": joins,
                 "posts": posts, "bomb": bomb, "bigposts": bigposts, "pgstop": pgstop}
        for name in ALL:
            if name == "pgstop" and not pg:
                continue
            if name in wanted:
                scenario(name, table[name])
        base = results.get("baseline", {}).get("member", {})
        for r in results.values():
            for k in ("info", "post"):
                b, m = base.get(k, {}).get("median_ms"), r["member"][k]["median_ms"]
                if b and m:
                    r["member"][k]["median_vs_baseline"] = round(m / b, 2)
        print(json.dumps({"idle_rss_mib": round(idle_rss, 1), "scenarios": results, "refused": refused(metrics_port),
                          "binary": BIN, "cores": os.cpu_count()}), flush=True)
    finally:
        e2e.stop_children()
        if pg:
            pg.close()
        e2e.drop_data_dir(data)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    main()
