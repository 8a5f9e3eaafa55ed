//! Interop test harness: the real `meshgroup` binary on free loopback ports, real Python peers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::{Value, json};

pub type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The venv python with the pinned reference packages (created once per test run).
pub fn python() -> R<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/setup-venv.sh");
        let out = Command::new("bash").arg(script).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("venv setup failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    })
    .clone()
    .map_err(Into::into)
}

pub fn free_port() -> R<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A meshgroup server process with its own data directory (and database).
pub struct Server {
    pub dir: PathBuf,
    pub rns_port: u16,
    pub metrics_port: u16,
    pub db_url: String,
    child: Option<Child>,
    _pg: Option<meshgroup::store::testing::TestStore>,
    pub extra_env: Vec<(String, String)>,
    /// Overrides `reticulum.interfaces` (TOML inline array); `None` is a tcp_server on `rns_port`.
    /// When set, `start` waits for the metrics port instead of `rns_port`.
    pub interfaces: Option<String>,
}

impl Server {
    /// Prepares a server (SQLite, or PostgreSQL when MESHGROUP_TEST_DATABASE_URL is set); not started.
    pub fn new() -> R<Self> {
        let dir = std::env::temp_dir().join(format!("meshgroup-it-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let (db_url, pg) = match std::env::var("MESHGROUP_TEST_DATABASE_URL") {
            Ok(admin) => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let db = rt.block_on(meshgroup::store::testing::postgres(&admin))?;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
                (format!("{base}/{}", db.name.clone().unwrap_or_default()), Some(db))
            }
            Err(_) => (format!("sqlite://{}/meshgroup.db?mode=rwc", dir.display()), None),
        };
        Ok(Server { dir, rns_port: free_port()?, metrics_port: free_port()?, db_url, child: None, _pg: pg, extra_env: vec![], interfaces: None })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_meshgroup"));
        c.env("MESHGROUP_DATA_DIR", &self.dir)
            .env("MESHGROUP_DATABASE__URL", &self.db_url)
            .env("MESHGROUP_METRICS__LISTEN", format!("127.0.0.1:{}", self.metrics_port))
            .env(
                "MESHGROUP_RETICULUM__INTERFACES",
                self.interfaces.clone().unwrap_or_else(|| format!("[{{type=\"tcp_server\",listen=\"127.0.0.1:{}\"}}]", self.rns_port)),
            )
            .env("MESHGROUP_RETICULUM__ANNOUNCE_INTERVAL_SECS", "3600")
            .env("MESHGROUP_RETICULUM__ANNOUNCE_BUDGET_PER_SEC", "50");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Runs a CLI command against this server's database; returns its JSON output.
    pub fn cli(&self, args: &[&str]) -> R<Value> {
        let out = self.command().arg("--json").args(args).output()?;
        if !out.status.success() {
            return Err(format!("meshgroup {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Creates a group through the CLI; returns its JSON.
    pub fn create_group(&self, args: &[&str]) -> R<Value> {
        let mut all = vec!["group", "create"];
        all.extend_from_slice(args);
        self.cli(&all)
    }

    pub fn start(&mut self) -> R {
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let out = std::fs::File::create(self.dir.join("stdout.log"))?;
        let child = self.command().arg("serve").stdout(out).stderr(log).spawn()?;
        self.child = Some(child);
        let ready_port = if self.interfaces.is_some() { self.metrics_port } else { self.rns_port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", ready_port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("server did not start; log:\n{}", self.log()).into())
    }

    pub fn stop(&mut self) {
        let _ = self.terminate();
    }

    /// SIGTERM, then the exit status once the drain is over (SIGKILL after 20 s, beyond the
    /// default 10 s grace, so a drain is never cut short).
    pub fn terminate(&mut self) -> R<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or("the server is not running")?;
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err("the server did not exit within 20 s of SIGTERM".into())
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the server printed on stdout (its start-up block, nothing else).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The raw Prometheus text of the metrics endpoint.
    pub fn metrics(&self) -> R<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body)?;
        Ok(body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::env::var("MESHGROUP_KEEP_TEST_DIRS").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Python RNS/LXMF peer process connected to a server.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    pub fn connect(port: u16) -> R<Self> {
        Self::connect_with_env(port, &[])
    }

    /// A peer running RNS 1.5.7 as shipped, without peer.py's fix of the `Link.request` race, as
    /// real clients (MeshChat, any app built on `rns`) run it.
    pub fn connect_unpatched(port: u16) -> R<Self> {
        Self::connect_with_env(port, &[("MESHGROUP_PEER_UNPATCHED", "1")])
    }

    pub fn connect_with_env(port: u16, env: &[(&str, &str)]) -> R<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/peer.py");
        let mut command = Command::new(python()?);
        command.arg(script).arg(port.to_string()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().ok_or("stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("stdout")?);
        let mut p = Peer { child, stdin, stdout };
        p.read()?;
        Ok(p)
    }

    fn read(&mut self) -> R<Value> {
        let mut line = String::new();
        // Anything that is not a JSON object (a stray log line) is passed over.
        while !line.trim_start().starts_with('{') {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err("peer exited".into());
            }
        }
        let v: Value = serde_json::from_str(&line)?;
        if v["ok"] != json!(true) {
            return Err(format!("peer error: {} {}", v["error"], v["trace"]).into());
        }
        Ok(v)
    }

    /// Runs one command; an `ok: false` reply is an error.
    pub fn call(&mut self, cmd: Value) -> R<Value> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.read()
    }

    pub fn identity(&mut self, name: &str) -> R<String> {
        Ok(self.call(json!({"cmd": "identity", "name": name}))?["identity_hash"].as_str().ok_or("hash")?.to_owned())
    }

    /// Opens a link to a group destination, identified as `as_` (or anonymous).
    pub fn link(&mut self, link: &str, dest: &str, as_: Option<&str>) -> R {
        self.call(json!({"cmd": "link", "link": link, "dest": dest, "as": as_}))?;
        Ok(())
    }

    /// Sends a request; returns the decoded envelope.
    pub fn request<M: prost::Message>(&mut self, link: &str, path: &str, body: &M) -> R<Envelope> {
        let v = self.call(json!({"cmd": "request", "link": link, "path": path, "data": hex::encode(body.encode_to_vec())}))?;
        let bytes = hex::decode(v["response"].as_str().ok_or("response")?)?;
        let resp = meshgroup::wire::proto::Response::decode(bytes.as_slice())?;
        Ok(Envelope { resp, raw_len: bytes.len() })
    }

    /// `/api/v1/info` on a link.
    pub fn info(&mut self, link: &str) -> R<meshgroup::wire::proto::InfoResponse> {
        self.request(link, "/api/v1/info", &meshgroup::wire::proto::InfoRequest {})?.ok()
    }

    /// `/api/v1/join` with a display name; the state the server answers.
    pub fn join(&mut self, link: &str, name: &str) -> R<meshgroup::wire::proto::JoinState> {
        use meshgroup::wire::proto as pb;
        let r: pb::JoinResponse = self.request(link, "/api/v1/join", &pb::JoinRequest { display_name: name.into(), ..Default::default() })?.ok()?;
        Ok(pb::JoinState::try_from(r.state)?)
    }

    /// The error code a request gets (`None` for a success).
    pub fn code<M: prost::Message>(&mut self, link: &str, path: &str, body: &M) -> R<Option<meshgroup::wire::proto::ErrorCode>> {
        Ok(self.request(link, path, body)?.code())
    }

    /// Runs one call of MeshChat's `GroupChatClient` (tests/py/cmds_meshchat.py) on `link`;
    /// returns the answer parsed as JSON.
    pub fn mc(&mut self, link: &str, call: &str, args: Value) -> R<Value> {
        let v = self.call(json!({"cmd": "mc", "link": link, "call": call, "args": args}))?;
        Ok(v["json"].clone())
    }

    /// Sends `text` (or, with `None`, a nil body) to `path` in the JSON dialect; the answer as JSON.
    pub fn mc_raw(&mut self, link: &str, path: &str, text: Option<&str>) -> R<Value> {
        let v = self.call(json!({"cmd": "mc_raw", "link": link, "path": path, "text": text.unwrap_or_default(), "nil": text.is_none()}))?;
        Ok(v["json"].clone())
    }

    /// Sends raw bytes as the request data.
    pub fn request_raw(&mut self, link: &str, path: &str, data: &[u8]) -> R<Envelope> {
        let v = self.call(json!({"cmd": "request", "link": link, "path": path, "data": hex::encode(data)}))?;
        let bytes = hex::decode(v["response"].as_str().ok_or("response")?)?;
        Ok(Envelope { resp: meshgroup::wire::proto::Response::decode(bytes.as_slice())?, raw_len: bytes.len() })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A decoded API response.
pub struct Envelope {
    pub resp: meshgroup::wire::proto::Response,
    pub raw_len: usize,
}

impl Envelope {
    /// The payload decoded as `M`; an error response is an error naming its code.
    pub fn ok<M: prost::Message + Default>(&self) -> R<M> {
        if let Some(e) = &self.resp.error {
            return Err(format!("API error {:?}: {}", meshgroup::wire::proto::ErrorCode::try_from(e.code), e.message).into());
        }
        Ok(M::decode(self.resp.payload.as_slice())?)
    }

    pub fn code(&self) -> Option<meshgroup::wire::proto::ErrorCode> {
        self.resp.error.as_ref().and_then(|e| meshgroup::wire::proto::ErrorCode::try_from(e.code).ok())
    }
}

pub fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// Polls `f` until it returns `Ok(Some(_))` or the deadline passes; the last error is reported.
/// [`poll`] every 100 ms for up to `secs` seconds.
pub fn poll_secs<T>(secs: u64, what: &str, f: impl FnMut() -> R<Option<T>>) -> R<T> {
    poll(Duration::from_secs(secs), Duration::from_millis(100), what, f)
}

pub fn poll<T>(within: Duration, step: Duration, what: &str, mut f: impl FnMut() -> R<Option<T>>) -> R<T> {
    let deadline = Instant::now() + within;
    let mut last = String::from("never ready");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {within:?} ({last})").into());
        }
        std::thread::sleep(step);
    }
}

pub fn wait_port(port: u16, within: Duration) -> R {
    poll(within, Duration::from_millis(50), &format!("port {port}"), || Ok(std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())))
}

/// A daemon of the test venv (`rnsd`, `lxmd`) with its own config directory; killed on drop.
pub struct Daemon {
    pub dir: PathBuf,
    program: &'static str,
    args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Writes `config` as `DIR/config` and starts `rnsd --config DIR`.
    pub fn rnsd(dir: &Path, config: &str) -> R<Self> {
        Self::start("rnsd", dir, config)
    }

    pub fn start(program: &'static str, dir: &Path, config: &str) -> R<Self> {
        Self::start_with(program, dir, config, Vec::new())
    }

    /// Like `start`, with more arguments after `--config DIR`.
    pub fn start_with(program: &'static str, dir: &Path, config: &str, args: Vec<String>) -> R<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("config"), config)?;
        let mut d = Daemon { program, dir: dir.to_owned(), args, child: None };
        d.spawn()?;
        Ok(d)
    }

    pub fn spawn(&mut self) -> R {
        let py = python()?;
        let bin = py.parent().ok_or("venv bin")?.join(self.program);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log"))?;
        let child = Command::new(bin).arg("--config").arg(&self.dir).args(&self.args).stdout(log.try_clone()?).stderr(log).stdin(Stdio::null()).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> R {
        self.kill();
        self.spawn()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::env::var("MESHGROUP_KEEP_TEST_DIRS").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TCPServerInterface section for a Reticulum config.
pub fn tcp_server_iface(port: u16) -> String {
    format!("  [[tcp in]]\n    type = TCPServerInterface\n    enabled = yes\n    listen_ip = 127.0.0.1\n    listen_port = {port}\n")
}

/// A name no other test process uses.
pub fn unique(tag: &str) -> R<String> {
    Ok(format!("mgit-{tag}-{}-{}", std::process::id(), free_port()?))
}

/// The value of one sample (metric name with its label set, exactly as exposed), or 0.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The sum of the samples of metric `name` whose labels contain every one of `labels`
/// (`outcome="cooldown"`), from the Prometheus text; 0 if there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && labels.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A memory figure of a process in KiB from /proc (`VmRSS` now, `VmHWM` the peak so far).
pub fn proc_kib(pid: u32, field: &str) -> R<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).ok_or(format!("no {field} in /proc/{pid}/status"))?;
    Ok(line.split_whitespace().nth(1).ok_or("malformed status line")?.parse()?)
}

/// A transport hub (rnsd) and an lxmd propagation node on it; returns them and the node's hash.
pub fn hub_and_node() -> R<(Daemon, Daemon, u16, String)> {
    let hub_port = free_port()?;
    let hub_dir = std::env::temp_dir().join(unique("pnhub")?);
    let hub = Daemon::rnsd(
        &hub_dir,
        &format!("[reticulum]\n  enable_transport = True\n  share_instance = No\n[logging]\n  loglevel = 4\n[interfaces]\n{}", tcp_server_iface(hub_port)),
    )?;
    wait_port(hub_port, Duration::from_secs(20))?;
    let pn_dir = std::env::temp_dir().join(unique("lxmd")?);
    let rns_dir = pn_dir.join("rns");
    std::fs::create_dir_all(&rns_dir)?;
    std::fs::write(
        rns_dir.join("config"),
        format!(
            "[reticulum]\n  enable_transport = False\n  share_instance = No\n[logging]\n  loglevel = 4\n[interfaces]\n  [[hub]]\n    type = TCPClientInterface\n    enabled = yes\n    target_host = 127.0.0.1\n    target_port = {hub_port}\n"
        ),
    )?;
    // The lowest stamp cost LXMF allows keeps the Python senders' work to seconds.
    let lxmd = Daemon::start_with(
        "lxmd",
        &pn_dir,
        "[propagation]\nenable_node = yes\nannounce_at_start = yes\nautopeer = no\npropagation_stamp_cost_target = 13\n[lxmf]\ndisplay_name = test node\n[logging]\nloglevel = 5\n",
        vec!["--rnsconfig".into(), rns_dir.display().to_string(), "-p".into()],
    )?;
    let pn = poll(Duration::from_secs(30), Duration::from_millis(200), "lxmd started", || {
        let log = lxmd.log();
        Ok(log.split("Propagation Node started on <").nth(1).and_then(|r| r.get(..32)).map(str::to_owned))
    })?;
    Ok((hub, lxmd, hub_port, pn))
}
