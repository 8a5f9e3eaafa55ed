//! The member's side of the protocol, for `meshgroup client`, its TUI and tests: an identity of
//! its own, the same transport adapter as the server, typed link-API calls, join stamps, and a
//! local cache (history, members seen, sync cursors) kept in step by incremental sync.
//!
//! [`Client::start`] brings up a node on the given interfaces and the client's own
//! `lxmf.delivery`, where the group's fan-out copies arrive ([`Client::incoming`]). A call on a
//! group goes through a [`Session`], one identified link to its `meshchat.group` destination.

mod events;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;

use crate::domain::Rights;
use crate::store::StoreError;
use crate::store::cache::{CachedGroup, CachedMember, CachedMessage, ClientCache, GroupNews};
use crate::transport::interfaces::InterfaceConfig;
use crate::transport::{Node, NodeConfig, NodeError};
use crate::wire::identity::{GroupIdentity, LXMF_ASPECT, identity_hash, parse_hash};
use crate::wire::proto as pb;
use crate::wire::{paths, stamp};

pub use events::Incoming;

/// History is synced in pages of at most this many messages (a server may cap them lower).
pub const SYNC_PAGE: u32 = 200;
/// Live copies waiting for a reader (`client watch`, the TUI); beyond it they stay in the cache only.
const INCOMING_QUEUE: usize = 256;

/// Everything a client call can fail with. The text is what the user reads, one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The caller's own input: an unknown group, a malformed hash, a missing right.
    #[error("{0}")]
    Input(String),
    /// No path or no link to the destination within the timeout.
    #[error("{what} is unreachable: {why}")]
    Unreachable { what: String, why: String },
    /// The server answered with a typed error.
    #[error("the server refused: {message} ({})", code.as_str_name())]
    Refused { code: pb::ErrorCode, message: String, stamp_cost: u32, challenge: Vec<u8> },
    /// The server's answer did not decode; nothing was cached from it.
    #[error("malformed response from the server: {0}")]
    Malformed(String),
    #[error("local cache: {0}")]
    Cache(#[from] StoreError),
    #[error("transport: {0}")]
    Node(#[from] NodeError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl ClientError {
    /// Exit code of the CLI: 2 for anything the user or the network caused, 1 for local failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Cache(_) | ClientError::Io { .. } => 1,
            _ => 2,
        }
    }
}

/// How a client is set up.
pub struct ClientConfig {
    /// Holds `identity` (0600) and `cache.db`; made 0700.
    pub data_dir: PathBuf,
    /// Where the network is: the user's rnsd (shared instance) or a `tcp_client`.
    pub interfaces: Vec<InterfaceConfig>,
    /// How long to wait for a path, a link or an answer.
    pub timeout: Duration,
    /// The propagation node for `--propagate`; `None` takes the last one heard.
    pub propagation_node: Option<[u8; 16]>,
}

/// A running client: its node, identity and cache.
pub struct Client {
    node: Node,
    me: GroupIdentity,
    cache: ClientCache,
    timeout: Duration,
    incoming: Option<mpsc::Receiver<Incoming>>,
    proofs: Arc<events::Proofs>,
    propagation: Arc<crate::lxmf::propagation::Propagation>,
}

/// Loads the client's identity file, or makes one (0600) on first use.
pub fn load_identity(dir: &Path) -> Result<GroupIdentity, ClientError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join("identity");
    let io = |source| ClientError::Io { path: path.display().to_string(), source };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    match std::fs::read(&path) {
        Ok(bytes) => GroupIdentity::from_private_key(&bytes).map_err(|e| ClientError::Input(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = GroupIdentity::generate();
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
            std::io::Write::write_all(&mut f, &id.private_key).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// Resolves GROUP as the user typed it: a `meshchat.group` hash (`<…>` allowed), or the name of
/// a group in the cache (case-insensitive, exactly one match).
pub fn resolve_group(groups: &[CachedGroup], key: &str) -> Result<[u8; 16], ClientError> {
    if let Some(h) = parse_hash(key) {
        return Ok(h);
    }
    let matches: Vec<&CachedGroup> = groups.iter().filter(|g| g.name.eq_ignore_ascii_case(key)).collect();
    match matches.as_slice() {
        [one] => Ok(one.dest),
        [] => Err(ClientError::Input(format!("unknown group {key}: not a destination hash, and no group of that name was heard (see `client groups`)"))),
        _ => Err(ClientError::Input(format!("{} groups are named {key}: give the destination hash", matches.len()))),
    }
}

/// Decodes a link-API answer: the `Response` envelope, then the path's payload. A typed error
/// becomes [`ClientError::Refused`]; anything that does not decode, [`ClientError::Malformed`].
pub fn decode_reply<T: prost::Message + Default>(response: rmpv::Value) -> Result<T, ClientError> {
    let bytes = match response {
        rmpv::Value::Binary(b) => b,
        other => return Err(ClientError::Malformed(format!("expected bytes, got {}", kind_of(&other)))),
    };
    let env = pb::Response::decode(bytes.as_slice()).map_err(|e| ClientError::Malformed(e.to_string()))?;
    if let Some(e) = env.error {
        let code = pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Internal);
        return Err(ClientError::Refused { code, message: e.message, stamp_cost: e.stamp_cost, challenge: e.challenge });
    }
    T::decode(env.payload.as_slice()).map_err(|e| ClientError::Malformed(e.to_string()))
}

fn kind_of(v: &rmpv::Value) -> &'static str {
    match v {
        rmpv::Value::Nil => "nil",
        rmpv::Value::Map(_) => "a map",
        rmpv::Value::String(_) => "a string",
        rmpv::Value::Array(_) => "a list",
        _ => "another type",
    }
}

/// What a join came to.
#[derive(Clone, Debug)]
pub struct JoinOutcome {
    pub state: pb::JoinState,
    /// The stamp cost met, and the time the stamp took (zero without a stamp).
    pub stamp_cost: u32,
    pub stamp_time: Duration,
    /// The group's name as a member sees it (the private name once approved).
    pub name: String,
}

/// What one sync transferred.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Messages received in this sync (new ones, or all after a gap in the events).
    pub fetched: usize,
    /// Cached messages turned into tombstones.
    pub tombstones: usize,
    /// Link requests it took.
    pub requests: usize,
}

/// How a post went out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Over the link API, committed with this history id.
    Link { id: i64, duplicate: bool },
    /// As an LXMF message to the group's `lxmf.delivery`, proven by the server (`delivered`).
    Lxmf { message_id: [u8; 32], delivered: bool },
    /// Deposited on a propagation node for the group to collect.
    Propagated { message_id: [u8; 32] },
}

/// How to send a post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The link API, else LXMF when no link can be made.
    Auto,
    Link,
    Lxmf,
    Propagate,
}

impl Client {
    /// Starts the node, registers the client's `lxmf.delivery` and opens the cache.
    pub async fn start(cfg: ClientConfig) -> Result<Client, ClientError> {
        let me = load_identity(&cfg.data_dir)?;
        let cache = ClientCache::open(&cfg.data_dir.join("cache.db")).await?;
        let node_cfg =
            NodeConfig { interfaces: cfg.interfaces, max_request_transfer: None, transport_identity: None, ratchet_store: Some(cfg.data_dir.join("ratchets")) };
        let (node, node_events) = Node::start(node_cfg).await?;
        let my_lxmf = node.register_destination(&me.private_key, "lxmf", "delivery").await?;
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let proofs = Arc::new(events::Proofs::default());
        let propagation = Arc::new(crate::lxmf::propagation::Propagation::new(node.clone(), cfg.propagation_node));
        let ctx = events::Ctx { node: node.clone(), cache: cache.clone(), my_lxmf, incoming: tx, proofs: proofs.clone(), propagation: propagation.clone() };
        tokio::spawn(events::run(ctx, node_events));
        Ok(Client { node, me, cache, timeout: cfg.timeout, incoming: Some(rx), proofs, propagation })
    }

    /// The client's identity hash.
    pub fn identity_hash(&self) -> [u8; 16] {
        self.me.hash
    }

    /// The client's own `lxmf.delivery` hash, where fan-out copies arrive.
    pub fn lxmf_hash(&self) -> [u8; 16] {
        self.me.destination(LXMF_ASPECT)
    }

    pub fn cache(&self) -> &ClientCache {
        &self.cache
    }

    /// The live copies the server fans out to this client (taken once: `watch` or the TUI).
    pub fn incoming(&mut self) -> Option<mpsc::Receiver<Incoming>> {
        self.incoming.take()
    }

    /// The display name of the profile (empty until set).
    pub async fn display_name(&self) -> Result<String, ClientError> {
        Ok(self.cache.profile("display_name").await?.unwrap_or_default())
    }

    pub async fn set_display_name(&self, name: &str) -> Result<(), ClientError> {
        if name.chars().count() > 64 {
            return Err(ClientError::Input("a display name has at most 64 characters".into()));
        }
        Ok(self.cache.set_profile("display_name", name).await?)
    }

    /// Announces the client's `lxmf.delivery` with its display name, so the group and its
    /// members can reach it and show its name.
    pub async fn announce(&self) -> Result<(), ClientError> {
        let name = self.display_name().await?;
        self.node.announce(self.lxmf_hash(), &crate::wire::lxmf::delivery_announce(&name, 0)).await?;
        Ok(())
    }

    /// Resolves GROUP against the cache (see [`resolve_group`]).
    pub async fn resolve(&self, key: &str) -> Result<[u8; 16], ClientError> {
        resolve_group(&self.cache.groups().await?, key)
    }

    /// Waits until the network told us the identity behind `dest`, asking for its path every second.
    async fn find(&self, dest: [u8; 16], deadline: Instant) -> Result<[u8; 64], ClientError> {
        loop {
            if let Some(key) = self.node.recall_identity(dest).await {
                return Ok(key);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Unreachable {
                    what: format!("<{}>", hex::encode(dest)),
                    why: format!("no path within {} s (is the server up, and the interface right?)", self.timeout.as_secs()),
                });
            }
            // With no interface up yet (one still connecting), the next second asks again.
            let _ = self.node.request_path(dest).await;
            let wait_until = (Instant::now() + Duration::from_secs(1)).min(deadline);
            while Instant::now() < wait_until && self.node.recall_identity(dest).await.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Opens an identified link to a destination (`meshchat.group` or `meshchat.groupserver`).
    async fn link(&self, dest: [u8; 16], aspect: &str) -> Result<Session<'_>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let public_key = self.find(dest, deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let link = self
            .node
            .open_link(dest, "meshchat", aspect, left)
            .await
            .map_err(|e| ClientError::Unreachable { what: format!("<{}>", hex::encode(dest)), why: e.to_string() })?;
        self.node.identify_link(link, &self.me.private_key).await?;
        Ok(Session { client: self, dest, link, public_key })
    }

    /// An identified link to a group. Nothing is cached until the group answers ([`Session::info`]).
    pub async fn group(&self, dest: [u8; 16]) -> Result<Session<'_>, ClientError> {
        self.link(dest, "group").await
    }

    /// An identified link to a server's `meshchat.groupserver` (directory, creation).
    pub async fn server(&self, dest: [u8; 16]) -> Result<Session<'_>, ClientError> {
        self.link(dest, "groupserver").await
    }

    /// A page of a server's directory. Entries are cached as groups heard of, with their keys.
    pub async fn directory(&self, server: [u8; 16], req: pb::DirectoryRequest) -> Result<pb::DirectoryResponse, ClientError> {
        let s = self.server(server).await?;
        let r: pb::DirectoryResponse = s.call(paths::DIRECTORY, &req).await?;
        for e in &r.groups {
            if let Ok(dest) = <[u8; 16]>::try_from(e.group_destination.as_slice()) {
                self.cache.note_group(&dest, news_of_entry(e)).await?;
            }
        }
        Ok(r)
    }

    /// Creates a group on a server, paying its creation stamp if it asks for one.
    pub async fn create(&self, server: [u8; 16], req: pb::CreateGroupRequest) -> Result<pb::DirectoryEntry, ClientError> {
        let s = self.server(server).await?;
        let s = &s;
        let r: pb::CreateGroupResponse = with_stamp(|challenge, stamp| {
            let req = pb::CreateGroupRequest { challenge, stamp, ..req.clone() };
            async move { s.call(paths::CREATE, &req).await }
        })
        .await?
        .0;
        let entry = r.group.ok_or_else(|| ClientError::Malformed("create answered without the group".into()))?;
        if let Ok(dest) = <[u8; 16]>::try_from(entry.group_destination.as_slice()) {
            let news = GroupNews { membership: Some("member".into()), rights: Some(Rights::ALL.0), ..news_of_entry(&entry) };
            self.cache.note_group(&dest, news).await?;
        }
        Ok(entry)
    }

    /// The cached history of a group, newest `n`, oldest first; no network.
    pub async fn cached_history(&self, dest: [u8; 16], n: u64) -> Result<Vec<CachedMessage>, ClientError> {
        if self.cache.group(&dest).await?.is_none() {
            return Err(ClientError::Input(format!("nothing cached for <{}>: join or sync it first", hex::encode(dest))));
        }
        Ok(self.cache.history(&dest, n).await?)
    }

    /// Sends a post as an LXMF message from the client's `lxmf.delivery` to the group's, stamped
    /// at the group's announced post cost, and waits for the server's proof.
    async fn post_lxmf(&self, g: &CachedGroup, text: &str, propagate: bool) -> Result<Posted, ClientError> {
        let (to, signer) = self.recipient_of(g)?;
        let body = crate::lxmf::outbound::Body { timestamp: now_s(), title: vec![], content: text.as_bytes().to_vec(), fields: vec![] };
        let my_lxmf = self.lxmf_hash();
        let to2 = to.clone();
        // Packing, the stamp and the encryption are CPU work: off the runtime.
        let built = tokio::task::spawn_blocking(move || {
            if propagate {
                crate::lxmf::outbound::pack_for(&signer, my_lxmf, &to2, &body).map(|(packed, id)| (None, packed, id))
            } else {
                crate::lxmf::outbound::prepare(&signer, my_lxmf, &to2, &body).map(|p| (Some(p.clone()), vec![], p.message_id))
            }
        })
        .await
        .map_err(|e| ClientError::Input(format!("building the message failed: {e}")))?
        .map_err(|e| ClientError::Input(format!("cannot send this as one LXMF packet: {e}")))?;
        match built {
            (None, packed, message_id) => {
                let (pn, _) = self
                    .propagation
                    .target()
                    .ok_or_else(|| ClientError::Unreachable { what: "a propagation node".into(), why: "none heard yet (give --propagation-node)".into() })?;
                self.find(pn, Instant::now() + self.timeout).await?;
                // The group checks the signature with our key, which it learns from our announce:
                // a group that collects from the node later cannot ask us then, as we may be gone.
                // Sent once the node is reachable, so the interface is surely up and it leaves.
                self.announce().await?;
                self.propagation
                    .deposit(&to, &packed)
                    .await
                    .map_err(|e| ClientError::Unreachable { what: "the propagation node".into(), why: e.to_string() })?;
                Ok(Posted::Propagated { message_id })
            }
            (Some(p), _, message_id) => {
                // The group asks for our path if it lacks our key; the announce saves it the trip.
                self.announce().await?;
                let hash = self.node.send_prepared(p.lxmf_dest, &p.public_key, ("lxmf", "delivery"), &p.ciphertext).await?;
                let delivered = self.proofs.wait(hash, self.timeout).await;
                Ok(Posted::Lxmf { message_id, delivered })
            }
        }
    }

    fn recipient_of(&self, g: &CachedGroup) -> Result<(crate::lxmf::outbound::Recipient, crate::wire::lxmf::Signer), ClientError> {
        let public_key = <[u8; 64]>::try_from(g.public_key.as_slice())
            .map_err(|_| ClientError::Input(format!("the key of <{}> is not known yet: join or list it first", hex::encode(g.dest))))?;
        let lxmf_dest = <[u8; 16]>::try_from(g.lxmf_dest.as_slice())
            .map_err(|_| ClientError::Input(format!("the lxmf.delivery of <{}> is not known yet: join it first", hex::encode(g.dest))))?;
        let to = crate::lxmf::outbound::Recipient {
            identity_hash: identity_hash(&public_key),
            lxmf_dest,
            public_key,
            ratchet: None,
            stamp_cost: u32::try_from(g.post_stamp_cost).unwrap_or(0),
        };
        let signer = crate::wire::lxmf::signer(&self.me.private_key).map_err(|e| ClientError::Input(e.to_string()))?;
        Ok((to, signer))
    }

    /// Posts `text` to a group: over the link API, or as LXMF when no link can be made (or as asked).
    pub async fn post(&self, dest: [u8; 16], text: &str, via: Via) -> Result<Posted, ClientError> {
        if text.is_empty() {
            return Err(ClientError::Input("nothing to post: the text is empty".into()));
        }
        let cached = || async {
            self.cache.group(&dest).await?.ok_or_else(|| ClientError::Input(format!("<{}> is not a group this client knows: join it first", hex::encode(dest))))
        };
        match via {
            Via::Lxmf => self.post_lxmf(&cached().await?, text, false).await,
            Via::Propagate => self.post_lxmf(&cached().await?, text, true).await,
            Via::Link => self.group(dest).await?.post(text.as_bytes(), &random_nonce()).await,
            Via::Auto => match self.group(dest).await {
                Ok(s) => s.post(text.as_bytes(), &random_nonce()).await,
                Err(ClientError::Unreachable { .. }) => self.post_lxmf(&cached().await?, text, false).await,
                Err(e) => Err(e),
            },
        }
    }
}

fn news_of_entry(e: &pb::DirectoryEntry) -> GroupNews {
    GroupNews {
        lxmf_dest: Some(e.lxmf_destination.clone()),
        public_key: Some(e.public_key.clone()),
        name: Some(e.name.clone()),
        private: Some(e.visibility == pb::Visibility::Private as i32),
        member_count: Some(i64::from(e.member_count)),
        join_stamp_cost: Some(i64::from(e.join_stamp_cost)),
        post_stamp_cost: Some(i64::from(e.post_stamp_cost)),
        ..Default::default()
    }
}

fn now_s() -> f64 {
    crate::store::now_ms() as f64 / 1000.0
}

fn random_nonce() -> [u8; 16] {
    rand::random()
}

/// Runs `call` with no stamp, and once more with a stamp when the server answers STAMP_REQUIRED
/// (then a second time if the cost went up meanwhile). Returns the answer, the cost met and the
/// time the stamp took. The midstate generator runs off the runtime.
async fn with_stamp<T, F, Fut>(mut call: F) -> Result<(T, u32, Duration), ClientError>
where
    F: FnMut(Vec<u8>, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let (mut challenge, mut stamp_bytes, mut cost, mut took) = (vec![], vec![], 0, Duration::ZERO);
    for attempt in 0..3 {
        match call(challenge.clone(), stamp_bytes.clone()).await {
            Ok(v) => return Ok((v, cost, took)),
            Err(ClientError::Refused { code: pb::ErrorCode::StampRequired, stamp_cost, challenge: c, .. }) if attempt < 2 && !c.is_empty() => {
                let started = Instant::now();
                let material = c.clone();
                let found = tokio::task::spawn_blocking(move || stamp::generate(&material, stamp::MESSAGE_ROUNDS, stamp_cost))
                    .await
                    .map_err(|e| ClientError::Input(format!("stamp generation failed: {e}")))?
                    .ok_or_else(|| ClientError::Input(format!("no stamp of cost {stamp_cost} found")))?;
                (challenge, stamp_bytes, cost, took) = (c, found.to_vec(), stamp_cost, started.elapsed());
            }
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Input("the server kept asking for a stamp".into()))
}

/// One identified link to a group (or a server) and the calls made on it.
pub struct Session<'a> {
    client: &'a Client,
    dest: [u8; 16],
    link: [u8; 16],
    public_key: [u8; 64],
}

impl Session<'_> {
    /// One typed request and its typed answer.
    pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(&self, path: &str, req: &Req) -> Result<Resp, ClientError> {
        let data = rmpv::Value::Binary(req.encode_to_vec());
        let answer = self.client.node.link_request(self.link, path, data, self.client.timeout).await.map_err(|e| match e {
            NodeError::RequestFailed(why) => ClientError::Unreachable { what: format!("{path} on <{}>", hex::encode(self.dest)), why },
            other => ClientError::Node(other),
        })?;
        decode_reply(answer)
    }

    pub fn dest(&self) -> [u8; 16] {
        self.dest
    }

    /// `/api/v1/info`, cached: the name, costs, membership and rights.
    pub async fn info(&self) -> Result<pb::InfoResponse, ClientError> {
        let info: pb::InfoResponse = self.call(paths::INFO, &pb::InfoRequest {}).await?;
        let cache = &self.client.cache;
        let was = cache.group(&self.dest).await?.map(|g| g.membership).unwrap_or_default();
        // A pending request stays pending until the server says we are in.
        let membership = if info.is_member {
            "member".to_owned()
        } else if was == "requested" {
            was
        } else {
            String::new()
        };
        let news = GroupNews {
            public_key: Some(self.public_key.to_vec()),
            lxmf_dest: Some(info.lxmf_destination.clone()),
            name: Some(info.name.clone()),
            private: Some(info.visibility == pb::Visibility::Private as i32),
            member_count: Some(i64::from(info.member_count)),
            join_stamp_cost: Some(i64::from(info.join_stamp_cost)),
            post_stamp_cost: Some(i64::from(info.post_stamp_cost)),
            membership: Some(membership),
            rights: Some(i64::from(info.rights)),
            ..Default::default()
        };
        cache.note_group(&self.dest, news).await?;
        Ok(info)
    }

    /// Refuses locally, before any request, an admin call the caller's rights do not cover.
    pub async fn require(&self, right: Rights, name: &str) -> Result<pb::InfoResponse, ClientError> {
        let info = self.info().await?;
        if !info.is_member || i64::from(info.rights) & right.0 == 0 {
            return Err(ClientError::Input(format!("you do not hold the {name} right in {}", info.name)));
        }
        Ok(info)
    }

    /// Joins, paying the join stamp if the group asks for one; then caches the group's name.
    pub async fn join(&self, display_name: &str, note: &str) -> Result<JoinOutcome, ClientError> {
        let base = pb::JoinRequest { display_name: display_name.to_owned(), note: note.to_owned(), ..Default::default() };
        let (r, stamp_cost, stamp_time) = with_stamp(|challenge, stamp| {
            let req = pb::JoinRequest { challenge, stamp, ..base.clone() };
            async move { self.call::<_, pb::JoinResponse>(paths::JOIN, &req).await }
        })
        .await?;
        let state = pb::JoinState::try_from(r.state).map_err(|_| ClientError::Malformed(format!("unknown join state {}", r.state)))?;
        if state == pb::JoinState::Requested {
            self.client.cache.note_group(&self.dest, GroupNews { membership: Some("requested".into()), ..Default::default() }).await?;
        }
        let info = self.info().await?;
        Ok(JoinOutcome { state, stamp_cost, stamp_time, name: info.name })
    }

    pub async fn leave(&self) -> Result<(), ClientError> {
        let _: pb::Ack = self.call(paths::LEAVE, &pb::LeaveRequest {}).await?;
        self.client.cache.forget_membership(&self.dest).await?;
        Ok(())
    }

    /// The whole roster, page by page; it replaces the cached one.
    pub async fn members(&self) -> Result<Vec<CachedMember>, ClientError> {
        let mut out = Vec::new();
        loop {
            let r: pb::MembersResponse = self.call(paths::MEMBERS, &pb::MembersRequest { offset: out.len() as u32, limit: SYNC_PAGE }).await?;
            let n = r.members.len();
            out.extend(r.members.into_iter().map(|m| CachedMember {
                identity: m.identity_hash,
                display_name: m.display_name,
                rights: i64::from(m.rights),
                joined_at: m.joined_at,
            }));
            if n == 0 || out.len() >= r.total as usize {
                break;
            }
        }
        self.client.cache.replace_members(&self.dest, &out).await?;
        Ok(out)
    }

    /// Brings the cached history up to date: messages above the message cursor, and the events
    /// above the event cursor (whose deletions turn cached messages into tombstones). Each page is
    /// committed with its cursors, so an interrupted sync resumes where it stopped.
    pub async fn sync(&self) -> Result<SyncReport, ClientError> {
        let cache = &self.client.cache;
        // A group new to the cache is asked who it is first: its row, then its history.
        let g = match cache.group(&self.dest).await? {
            Some(g) => g,
            None => {
                self.info().await?;
                cache.group(&self.dest).await?.unwrap_or_default()
            }
        };
        let me = hex::encode(self.client.me.hash);
        let mut report = SyncReport::default();
        let (mut after, mut events_after) = (g.message_cursor, g.event_cursor);
        let mut rescan = false;
        loop {
            let req = pb::MessagesRequest {
                limit: SYNC_PAGE,
                after_id: after,
                order: pb::Order::OldestFirst as i32,
                include_events: true,
                events_after_id: events_after,
                ..Default::default()
            };
            let r: pb::MessagesResponse = self.call(paths::MESSAGES, &req).await?;
            report.requests += 1;
            let messages: Vec<CachedMessage> = r
                .messages
                .iter()
                .map(|m| CachedMessage {
                    id: m.id,
                    sender: m.sender_identity_hash.clone(),
                    sender_name: m.sender_display_name.clone(),
                    timestamp_s: m.timestamp_s,
                    content: m.content.clone(),
                    deleted: m.deleted,
                })
                .collect();
            let deleted: Vec<i64> = r.events.iter().filter(|e| e.kind == "message_deleted").filter_map(|e| e.subject.parse().ok()).collect();
            let removed = r.events.iter().any(|e| matches!(e.kind.as_str(), "kicked" | "banned") && e.subject == me);
            let top_event = r.events.iter().map(|e| e.id).max().unwrap_or(events_after).max(events_after);
            cache.apply_sync(&self.dest, &messages, &deleted, top_event).await?;
            if removed {
                cache.forget_membership(&self.dest).await?;
            }
            report.fetched += messages.len();
            report.tombstones += deleted.len();
            events_after = top_event;
            // The events come newest first, one page at most: older ones hidden below it may be
            // deletions, so the history is read again from the start (its tombstones say all).
            // A full page counts as "more" too, for servers from before `more` was sent.
            if (r.more_events || r.events.len() >= SYNC_PAGE as usize) && !rescan {
                rescan = true;
                after = 0;
                continue;
            }
            match messages.iter().map(|m| m.id).max() {
                Some(top) if r.more || messages.len() >= SYNC_PAGE as usize => after = top,
                _ => break,
            }
        }
        Ok(report)
    }

    /// `/api/v1/messages/send`; `nonce` makes a retry safe (the server stores it once).
    pub async fn post(&self, content: &[u8], nonce: &[u8]) -> Result<Posted, ClientError> {
        let req = pb::SendMessageRequest { content: content.to_vec(), timestamp_s: now_s(), nonce: nonce.to_vec(), ..Default::default() };
        let r: pb::SendMessageResponse = self.call(paths::SEND, &req).await?;
        let name = self.client.display_name().await?;
        let own = CachedMessage {
            id: r.id,
            sender: self.client.me.hash.to_vec(),
            sender_name: name,
            timestamp_s: req.timestamp_s,
            content: content.to_vec(),
            deleted: false,
        };
        self.client.cache.put_live_message(&self.dest, &own).await?;
        Ok(Posted::Link { id: r.id, duplicate: r.duplicate })
    }

    /// Deletes a message (one's own, or anyone's with the delete right); the cache keeps a tombstone.
    pub async fn delete(&self, id: i64) -> Result<(), ClientError> {
        let _: pb::Ack = self.call(paths::DELETE, &pb::DeleteMessageRequest { id }).await?;
        self.client.cache.apply_sync(&self.dest, &[], &[id], 0).await?;
        Ok(())
    }

    pub async fn notify(&self, mode: pb::NotifyMode) -> Result<(), ClientError> {
        let _: pb::Ack = self.call(paths::NOTIFICATIONS, &pb::NotificationsUpdate { mode: Some(mode as i32), digest: None, text_only: None }).await?;
        Ok(())
    }

    pub async fn join_requests(&self) -> Result<Vec<pb::PendingJoin>, ClientError> {
        self.require(Rights::APPROVE, "approve").await?;
        let r: pb::JoinRequestsResponse = self.call(paths::JOIN_REQUESTS, &pb::JoinRequestsRequest {}).await?;
        Ok(r.requests)
    }

    /// Approves (`true`) or rejects a join request.
    pub async fn decide(&self, identity: [u8; 16], approve: bool) -> Result<(), ClientError> {
        self.require(Rights::APPROVE, "approve").await?;
        let path = if approve { paths::APPROVE } else { paths::REJECT };
        let _: pb::Ack = self.call(path, &pb::DecideJoinRequest { identity_hash: identity.to_vec() }).await?;
        Ok(())
    }

    pub async fn kick(&self, identity: [u8; 16]) -> Result<(), ClientError> {
        self.require(Rights::KICK, "kick").await?;
        let _: pb::Ack = self.call(paths::KICK, &pb::KickRequest { identity_hash: identity.to_vec() }).await?;
        Ok(())
    }

    pub async fn ban(&self, identity: [u8; 16], reason: &str) -> Result<(), ClientError> {
        if reason.trim().is_empty() {
            return Err(ClientError::Input("a ban needs a reason (--reason)".into()));
        }
        self.require(Rights::BAN, "ban").await?;
        let _: pb::Ack = self.call(paths::BAN, &pb::BanRequest { identity_hash: identity.to_vec(), reason: reason.to_owned() }).await?;
        Ok(())
    }

    pub async fn unban(&self, identity: [u8; 16]) -> Result<(), ClientError> {
        self.require(Rights::BAN, "ban").await?;
        let _: pb::Ack = self.call(paths::UNBAN, &pb::UnbanRequest { identity_hash: identity.to_vec() }).await?;
        Ok(())
    }

    /// Adds (`grant`) or removes rights of a member, from their current rights in the roster.
    pub async fn change_rights(&self, identity: [u8; 16], rights: Rights, grant: bool) -> Result<Rights, ClientError> {
        self.require(Rights::PERMISSIONS, "permissions").await?;
        let roster = self.members().await?;
        let member = roster
            .iter()
            .find(|m| m.identity == identity)
            .ok_or_else(|| ClientError::Input(format!("<{}> is not a member of this group", hex::encode(identity))))?;
        let new = if grant { member.rights | rights.0 } else { member.rights & !rights.0 };
        let _: pb::Ack = self.call(paths::PERMISSIONS, &pb::PermissionsRequest { identity_hash: identity.to_vec(), rights: new as u32 }).await?;
        Ok(Rights(new))
    }

    pub async fn rename(&self, public_name: Option<String>, private_name: Option<String>) -> Result<(), ClientError> {
        if public_name.is_none() && private_name.is_none() {
            return Err(ClientError::Input("give --name or --private-name".into()));
        }
        self.require(Rights::RENAME, "rename").await?;
        let _: pb::Ack = self.call(paths::RENAME, &pb::DisplayNameUpdate { public_name, private_name }).await?;
        self.info().await?;
        Ok(())
    }

    pub async fn settings(&self, update: pb::SettingsUpdate) -> Result<(), ClientError> {
        if update == pb::SettingsUpdate::default() {
            return Err(ClientError::Input("no setting given".into()));
        }
        self.require(Rights::SETTINGS, "settings").await?;
        let _: pb::Ack = self.call(paths::SETTINGS, &update).await?;
        self.info().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(resp: &pb::Response) -> rmpv::Value {
        rmpv::Value::Binary(resp.encode_to_vec())
    }

    #[test]
    fn replies_decode_to_payloads_errors_or_malformed() {
        let ok = pb::Response { error: None, payload: pb::SendMessageResponse { id: 7, ..Default::default() }.encode_to_vec() };
        assert_eq!(decode_reply::<pb::SendMessageResponse>(reply(&ok)).map(|r| r.id).ok(), Some(7));
        let refused = pb::Response {
            error: Some(pb::Error { code: pb::ErrorCode::StampRequired as i32, message: "stamp".into(), stamp_cost: 8, challenge: vec![1; 32] }),
            payload: vec![],
        };
        assert!(matches!(
            decode_reply::<pb::JoinResponse>(reply(&refused)),
            Err(ClientError::Refused { code: pb::ErrorCode::StampRequired, stamp_cost: 8, .. })
        ));
        assert!(matches!(decode_reply::<pb::JoinResponse>(rmpv::Value::Nil), Err(ClientError::Malformed(_))));
        assert!(matches!(decode_reply::<pb::JoinResponse>(rmpv::Value::Binary(vec![0xff, 0xff, 0xff])), Err(ClientError::Malformed(_))));
        let bad_payload = pb::Response { error: None, payload: vec![0x0a, 0x05, 1] };
        assert!(matches!(decode_reply::<pb::InfoResponse>(reply(&bad_payload)), Err(ClientError::Malformed(_))));
    }

    #[test]
    fn groups_resolve_by_hash_or_unique_name() {
        let g = |d: u8, name: &str| CachedGroup { dest: [d; 16], name: name.into(), ..Default::default() };
        let groups = vec![g(1, "Mesh Friends"), g(2, "Twins"), g(3, "twins")];
        assert_eq!(resolve_group(&groups, &format!("<{}>", hex::encode([9u8; 16]))).ok(), Some([9; 16]));
        assert_eq!(resolve_group(&groups, "mesh friends").ok(), Some([1; 16]));
        assert!(matches!(resolve_group(&groups, "twins"), Err(ClientError::Input(m)) if m.contains("2 groups")));
        assert!(matches!(resolve_group(&groups, "nope"), Err(ClientError::Input(m)) if m.contains("unknown group")));
    }

    #[test]
    fn the_identity_file_is_made_once_and_private() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshgroup-client-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_identity(&dir)?;
        let b = load_identity(&dir)?;
        assert_eq!(a.hash, b.hash);
        assert_eq!(std::fs::metadata(dir.join("identity"))?.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        std::fs::write(dir.join("identity"), b"short")?;
        assert!(matches!(load_identity(&dir), Err(ClientError::Input(_))));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
