//! The admin socket: CLI commands that change a group reach a running server's group actor through
//! it, so they take the same path as a change made over the network (the rules, the actor's
//! memory, notices to members, announces).
//!
//! A Unix socket in the data directory, mode 0600: whoever may open it may open the database too,
//! so every request acts as the group's owner. One JSON line in, one JSON line out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::Addr;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::actors::supervisor::{Refresh, Registry, Supervisor, run_op};
use crate::group::{Caller, GroupError, Op};
use crate::stamps::StampPool;

/// A request line longer than this is refused: no operation needs more.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long the CLI waits for the server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One request about one group: start serving it, run an operation on it as the owner, or both.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminRequest {
    pub group: i64,
    /// The operation to run as the owner; none when the request only starts the group.
    #[serde(default)]
    pub op: Option<Op>,
    /// Start serving the group first: it was just created in the store, and the next command of a
    /// provisioning script must find it running.
    #[serde(default)]
    pub start: bool,
    /// Answer with the stamp costs the group asks for now (its own plus the adaptive raise).
    #[serde(default)]
    pub costs: bool,
}

/// The answer to an [`AdminRequest`]: no `error` means done.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AdminResponse {
    pub error: Option<String>,
    /// The server failed (its store, a stopped actor), as opposed to refusing the request.
    pub failure: bool,
    /// With `costs`: the group's current join and post stamp costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<CurrentCosts>,
}

/// A group's stamp costs as the running server asks for them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentCosts {
    pub join_stamp_cost: u32,
    pub post_stamp_cost: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another server already listens on {0}")]
    InUse(PathBuf),
    /// The server refused the operation (the rules, bad input).
    #[error("{0}")]
    Refused(String),
    /// The server could not carry the operation out.
    #[error("the server failed: {0}")]
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io { path: path.to_owned(), source }
}

/// Binds the socket (replacing a stale one) and serves it until shutdown; the socket file goes then.
pub fn listen(path: &Path, registry: Registry, supervisor: Addr<Supervisor>, stamps: StampPool, life: &crate::lifecycle::Lifecycle) -> Result<(), AdminError> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(AdminError::InUse(path.to_owned()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    tracing::info!(socket = %path.display(), "admin socket listening");
    let (path, tasks) = (path.to_owned(), life.clone());
    // Not restarted: a listener that failed is replaced by the store poll (see the CLI), and the
    // accept errors it sees are retried in place.
    life.spawn(async move {
        let stop = tasks.token();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                // One connection carries one short request; each is work shutdown waits for.
                Ok((conn, _)) => tasks.spawn(serve_one(conn, registry.clone(), supervisor.clone(), stamps.clone())),
                Err(err) => {
                    tracing::warn!(%err, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn serve_one(conn: UnixStream, registry: Registry, supervisor: Addr<Supervisor>, stamps: StampPool) {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    let answer = match BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line).await {
        Err(err) => refused(format!("unreadable request: {err}")),
        Ok(_) => match parse_request(&line) {
            Err(err) => refused(format!("malformed request: {err}")),
            Ok(req) => apply(req, &registry, &supervisor, &stamps).await,
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    if let Err(err) = write.write_all(&out).await {
        tracing::info!(%err, "admin client went away before the answer");
    }
}

/// Decodes one request line (pure; the socket reads at most `MAX_REQUEST` bytes of it).
pub fn parse_request(line: &str) -> Result<AdminRequest, serde_json::Error> {
    serde_json::from_str(line)
}

/// Decodes the server's answer line.
pub fn parse_response(line: &str) -> Result<AdminResponse, serde_json::Error> {
    serde_json::from_str(line)
}

fn refused(error: String) -> AdminResponse {
    tracing::info!(%error, "admin request refused");
    AdminResponse { error: Some(error), failure: false, costs: None }
}

fn failed(error: String) -> AdminResponse {
    AdminResponse { error: Some(error), failure: true, costs: None }
}

async fn apply(req: AdminRequest, registry: &Registry, supervisor: &Addr<Supervisor>, stamps: &StampPool) -> AdminResponse {
    if req.start {
        tracing::info!(group = req.group, "admin request: start the group");
        if let Err(err) = supervisor.send(Refresh(req.group)).await {
            return failed(format!("supervisor unavailable: {err}"));
        }
    }
    let route = registry.read().ok().and_then(|r| r.values().find(|route| route.group_id == req.group).cloned());
    let Some(route) = route else {
        return failed(format!("group {} is not running on this server", req.group));
    };
    if req.costs {
        return match route.addr.send(crate::actors::group::GetInfo { caller: Caller::Owner }).await {
            Ok(Ok(v)) => AdminResponse {
                costs: Some(CurrentCosts {
                    join_stamp_cost: stamps.cost(route.group_id, v.join_stamp_cost),
                    post_stamp_cost: stamps.cost(route.group_id, v.post_stamp_cost),
                }),
                ..Default::default()
            },
            Ok(Err(err)) => failed(err.to_string()),
            Err(err) => failed(format!("group actor unavailable: {err}")),
        };
    }
    let Some(op) = req.op else { return AdminResponse::default() };
    tracing::info!(group = req.group, ?op, "admin request");
    match run_op(supervisor, &route, Caller::Owner, op).await {
        Ok(Ok(_)) => AdminResponse::default(),
        Ok(Err(GroupError::Store(err))) => {
            tracing::error!(%err, group = req.group, "store failure on an admin request");
            failed(GroupError::Store(err).to_string())
        }
        Ok(Err(err)) => refused(err.to_string()),
        Err(err) => failed(format!("group actor unavailable: {err}")),
    }
}

/// What [`send`] did.
#[derive(Debug)]
pub enum Sent {
    /// A running server applied the operation.
    ByServer,
    /// No server listens: the operation comes back for the caller to apply to the store.
    NoServer(Op),
}

/// Hands `op` on `group` to the server listening on `path`, if there is one.
pub async fn send(path: &Path, group: i64, op: Op) -> Result<Sent, AdminError> {
    let request = AdminRequest { group, op: Some(op), start: false, costs: false };
    match exchange(path, &request).await? {
        Some(_) => Ok(Sent::ByServer),
        None => Ok(Sent::NoServer(request.op.ok_or_else(|| AdminError::Failed("the operation was lost".into()))?)),
    }
}

/// The stamp costs a running server asks for now in `group`; `None` when no server listens.
pub async fn current_costs(path: &Path, group: i64) -> Result<Option<CurrentCosts>, AdminError> {
    Ok(exchange(path, &AdminRequest { group, op: None, start: false, costs: true }).await?.and_then(|a| a.costs))
}

/// Has a running server start serving a group just created in the store, before the caller goes
/// on; `false` when no server listens (it will read the group when it starts).
pub async fn start(path: &Path, group: i64) -> Result<bool, AdminError> {
    Ok(exchange(path, &AdminRequest { group, op: None, start: true, costs: false }).await?.is_some())
}

/// One request and its answer; `None` when no server listens on `path`.
async fn exchange(path: &Path, request: &AdminRequest) -> Result<Option<AdminResponse>, AdminError> {
    let conn = match UnixStream::connect(path).await {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let (read, mut write) = conn.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| AdminError::Failed(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(io(path))?;
    let mut answer = String::new();
    tokio::time::timeout(ANSWER_TIMEOUT, BufReader::new(read).read_line(&mut answer))
        .await
        .map_err(|_| AdminError::Failed("no answer from the server".into()))?
        .map_err(io(path))?;
    let answer = parse_response(&answer).map_err(|e| AdminError::Failed(format!("malformed answer: {e}")))?;
    match answer.error {
        None => Ok(Some(answer)),
        Some(e) if answer.failure => Err(AdminError::Failed(e)),
        Some(e) => Err(AdminError::Refused(e)),
    }
}
