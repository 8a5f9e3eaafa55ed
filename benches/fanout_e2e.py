"""End to end over loopback TCP: one post to N members (default 1,000) that are real Python LXMF peers.

Run through benches/fanout_e2e.sh. Starts a release `meshgroup serve` on free loopback ports with a
fresh data dir, one Python peer process (tests/py/peer.py) holding the members (plain RNS
lxmf.delivery destinations with PROVE_ALL: the bulk members of tests/py/peer_core.py) and one LXMRouter poster, adds
them all to a group with the CLI, has the poster send one message to the group, and measures the
time until the last member holds it, plus the server's CPU time and peak RSS (VmHWM). A second post
follows once the first has reached everyone: by then the server knows every member's keys, so it
shows the fan-out without path discovery (after announces at 20/s, above the 3.5/s burst limit of
a new interface, most members are learnt by path request during the first). Prints one JSON line. Everything it starts is stopped before it exits; the wrapper bounds it with `timeout`.

With E2E_JOIN=1 the members join as clients do instead: each joins the public group over the link
API (a link to meshchat.group, identify, /api/v1/join), 8 links at a time, while their announces go
out (E2E_ANNOUNCE=0 skips those: the server then knows them from link identify only), and the
report adds the join wave's time and the messages members received during it (the notice storm a
join wave used to cause).

With E2E_SIGTERM=1 a third post follows, and the server gets SIGTERM once a quarter of the members
hold it (mid-fan-out). The report adds the exit status, the time from the signal to the exit,
whether the log holds a panic, and, after a restart on the same data, when every member held the
third post, how many hold a second different copy of any post (must be 0) and how many packet-level
resends arrived.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MESHGROUP_BIN", os.path.join(ROOT, "target/release/meshgroup"))
PEER = os.path.join(ROOT, "tests/py/peer.py")
DEADLINE = time.time() + float(os.environ.get("E2E_BUDGET_SECS", "270"))
CHILDREN = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def left(cap):
    return max(1.0, min(cap, DEADLINE - time.time()))


def server_env(data, rns_port, metrics_port):
    """The environment of a bench server and its CLI (benches/flood.py's too): data dir `data`
    with a SQLite store in it, RNS on a loopback TCP server at `rns_port`, /metrics at
    `metrics_port`, the server's periodic announce once an hour and up to 50 announces a second,
    RUST_LOG warn unless set."""
    env = dict(os.environ)
    env.update({
        "MESHGROUP_DATA_DIR": data,
        "MESHGROUP_DATABASE__URL": f"sqlite://{data}/meshgroup.db?mode=rwc",
        "MESHGROUP_METRICS__LISTEN": f"127.0.0.1:{metrics_port}",
        "MESHGROUP_RETICULUM__INTERFACES": f'[{{type="tcp_server",listen="127.0.0.1:{rns_port}"}}]',
        "MESHGROUP_RETICULUM__ANNOUNCE_INTERVAL_SECS": "3600",
        "MESHGROUP_RETICULUM__ANNOUNCE_BUDGET_PER_SEC": "50",
        "RUST_LOG": env.get("RUST_LOG", "warn"),
    })
    # A MESHGROUP_CONFIG of the caller's shell would add its settings to the bench's.
    env.pop("MESHGROUP_CONFIG", None)
    return env


def cli_for(env, data):
    """`cli(*args)`: runs `meshgroup --json ARGS` in `env` and returns its JSON, or raises with
    the end of its stderr. The data dir as working directory keeps a config/ of the checkout from
    applying."""
    def cli(*args):
        out = subprocess.run([BIN, "--json", *args], env=env, cwd=data, capture_output=True, text=True, timeout=left(30))
        if out.returncode != 0:
            raise RuntimeError(f"meshgroup {args}: {out.stderr.strip()[-400:]}")
        return json.loads(out.stdout)
    return cli


def start_server(env, data, rns_port, log_path):
    """Starts `meshgroup serve` (stderr appended to `log_path`) and returns it once its RNS port
    takes connections; raises if it exits first or the deadline passes."""
    proc = subprocess.Popen([BIN, "serve"], env=env, cwd=data, stdout=subprocess.DEVNULL, stderr=open(log_path, "a"))
    CHILDREN.append(proc)
    while True:
        try:
            socket.create_connection(("127.0.0.1", rns_port), timeout=1).close()
            return proc
        except OSError:
            if time.time() > DEADLINE or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.05)


def stop_children():
    """SIGTERM to everything started, newest first; SIGKILL to what has not exited 10 s later."""
    for c in reversed(CHILDREN):
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    for c in reversed(CHILDREN):
        try:
            c.wait(timeout=10)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def drop_data_dir(data):
    """Removes the data dir, unless MESHGROUP_KEEP_TEST_DIRS asks to keep it (then says where)."""
    if os.environ.get("MESHGROUP_KEEP_TEST_DIRS"):
        sys.stderr.write(f"data dir kept: {data}\n")
    else:
        shutil.rmtree(data, ignore_errors=True)


class Peer:
    def __init__(self, port):
        self.p = subprocess.Popen([sys.executable, PEER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        CHILDREN.append(self.p)
        self.read()

    def read(self):
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("peer exited")
            if line.lstrip().startswith("{"):
                v = json.loads(line)
                if not v.get("ok"):
                    raise RuntimeError(f"peer: {v.get('error')}")
                return v

    def call(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) / 1024.0  # kB -> MiB
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def metrics(port):
    """Counters that explain the figures: deliveries by outcome (no_path = the member's announce was
    not known yet), lost transport events, fan-out preparation time."""
    import urllib.request
    keep = ("meshgroup_deliveries_total", "meshgroup_transport_events_lost_total", "meshgroup_lxmf_sent_total",
            "meshgroup_fanout_prepare_duration_seconds_sum", "meshgroup_fanout_prepare_duration_seconds_count")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError as e:
        return {"error": str(e)}
    out = {}
    for line in text.splitlines():
        if line.startswith(keep):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def post(peer, group, pid, nth, text, cap):
    """One post by the LXMRouter poster; waits until every member holds it (its `nth` message)."""
    before = proc_status(pid)
    t0 = time.time()
    sent = peer.call(cmd="send", dest=group["lxmf_destination_hash"], content=text.hex(), timeout=left(60),
                     **{"as": "poster"})
    t_accepted = time.time()
    r = peer.call(cmd="bench_reached", unique=nth, timeout=left(cap))
    after = proc_status(pid)
    times = r["times"]
    return {
        "reached": r["reached"],
        "poster_delivered": sent["delivered"],
        "accepted_s": round(t_accepted - t0, 3),
        "first_s": round(times[0] - t0, 3) if times else None,
        "median_s": round(times[len(times) // 2] - t0, 3) if times else None,
        "p90_s": round(times[len(times) * 9 // 10 - 1] - t0, 3) if len(times) >= 10 else None,
        "last_s": round(times[-1] - t0, 3) if times else None,
        "receipts_total": r["receipts"],
        "invalid": r["invalid"],
        "server_cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
        "server_peak_rss_mib": round(after["VmHWM"], 1),
    }


def sigterm_mid_fanout(peer, group, server, serve, log_path, n):
    """A third post; SIGTERM once a quarter of the members hold it; a restart; then every member's tally."""
    peer.call(cmd="send", dest=group["lxmf_destination_hash"], content=b"cut short by a SIGTERM".hex(), timeout=left(60),
              **{"as": "poster"})
    while peer.call(cmd="bench_tally", unique=3)["reached"] < n // 4 and time.time() < DEADLINE:
        time.sleep(0.01)
    at_signal = peer.call(cmd="bench_tally", unique=3)["reached"]
    t0 = time.time()
    server.send_signal(signal.SIGTERM)
    status = server.wait(timeout=left(60))
    exit_s = time.time() - t0
    at_exit = peer.call(cmd="bench_tally", unique=3)["reached"]
    with open(log_path, errors="replace") as f:
        panicked = "panicked" in f.read()
    t1 = time.time()
    restarted = serve()
    done = peer.call(cmd="bench_reached", unique=3, timeout=left(120))
    after = peer.call(cmd="bench_tally", unique=3)
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(timeout=left(30))
    return {
        "reached_at_signal": at_signal,
        "reached_at_exit": at_exit,
        "exit_status": status,
        "exit_s": round(exit_s, 3),
        "panic_in_log": panicked,
        "reached_after_restart": done["reached"],
        "all_reached_s_after_restart": round(done["times"][-1] - t1, 3) if done["reached"] == n and done["times"] else None,
        "members_with_a_second_copy": after["over"],
        "packet_resends": after["repeats"],
    }


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    pace = float(os.environ.get("E2E_ANNOUNCE_PACE", "0.05"))
    data = tempfile.mkdtemp(prefix="meshgroup-e2e-")
    rns_port, metrics_port = free_port(), free_port()
    env = server_env(data, rns_port, metrics_port)
    cli = cli_for(env, data)
    server = None
    try:
        group = cli("group", "create", "--name", "E2E")
        gid = str(group["id"])
        log_path = os.path.join(data, "server.log")

        def serve():
            return start_server(env, data, rns_port, log_path)

        server = serve()
        peer = Peer(rns_port)
        t_setup = time.time()
        join = os.environ.get("E2E_JOIN") == "1"
        announce = os.environ.get("E2E_ANNOUNCE", "1") == "1"
        members = peer.call(cmd="bench_members", n=n, pace=pace, announce=announce)["members"]
        wave = None
        if join:
            # As clients join: over the link API, 8 at a time, while the announces go out.
            cpu0 = proc_status(server.pid)["cpu_s"]
            wave = peer.call(cmd="bench_join", dest=group["group_destination_hash"], concurrency=8, timeout_total=left(200))
            wave["server_cpu_s"] = round(proc_status(server.pid)["cpu_s"] - cpu0, 3)
        else:
            # Added through the CLI while the announces go out.
            for i, m in enumerate(members):
                cli("member", "add", gid, m, "--name", f"m{i}")
        peer.call(cmd="router", **{"as": "poster"})
        poster = peer.call(cmd="identity", name="poster")["identity_hash"]
        cli("member", "add", gid, poster, "--name", "poster")
        if not peer.call(cmd="bench_announced", timeout=left(120))["done"]:
            raise RuntimeError("announces did not finish in time")
        setup_s = time.time() - t_setup
        # Let the last announces be processed and the last member add be picked up.
        time.sleep(3)
        before = proc_status(server.pid)
        if wave is not None:
            got = peer.call(cmd="bench_inbox")["members"]
            wave["messages_to_members_during_wave"] = sum(len(v) for v in got.values())

        # E2E_PERF=FILE: a CPU profile of the server during the two posts only (perf record).
        perf = None
        if os.environ.get("E2E_PERF"):
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g", "-p", str(server.pid), "-o", os.environ["E2E_PERF"]],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        first = post(peer, group, server.pid, 1, b"one post to everyone", 150)
        # The same again once the server knows every member: the fan-out itself, without discovery.
        second = post(peer, group, server.pid, 2, b"and a second one", 60)
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=30)
        counters = metrics(metrics_port)
        sigterm = None
        if os.environ.get("E2E_SIGTERM") == "1":
            sigterm = sigterm_mid_fanout(peer, group, server, serve, log_path, n)
        result = {
            "members": n,
            "join_wave": wave,
            "announced": announce,
            "first_post": first,
            "server_cpu_ms_per_member_first_post": round(first["server_cpu_s"] / n * 1000, 4),
            "second_post": second,
            "server_peak_rss_mib": second.get("server_peak_rss_mib", first["server_peak_rss_mib"]),
            "server_peak_rss_before_posts_mib": round(before["VmHWM"], 1),
            "setup_s": round(setup_s, 1),
            "announce_pace_s": pace,
            "cores": os.cpu_count(),
            "metrics": counters,
            "sigterm": sigterm,
        }
        print(json.dumps(result), flush=True)
    finally:
        stop_children()
        drop_data_dir(data)


if __name__ == "__main__":
    # `timeout` sends SIGTERM: turn it into an exception so the finally block stops the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    main()
