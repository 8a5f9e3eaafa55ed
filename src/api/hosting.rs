//! The hosting service: the server's own `meshchat.groupserver` destination, with the group
//! directory and self-service group creation, deletion and founder transfer.
//!
//! The router sends every request for the server destination here. Group operations still go
//! through the group's actor (and so through `GroupCore` and `domain::authorize`); this module
//! adds only what is about the server: who may create, quotas, the creation stamp, the listing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::actors::supervisor::{Refresh, run_op};
use crate::api::services::Services;
use crate::api::{ApiError, decode, hash16};
use crate::config::{CreationPolicy, HostingConfig, LimitsConfig};
use crate::group::{Caller, CreateGroup, GroupError, Op, create_group};
use crate::store::{DirectoryQuery, DirectoryRow, DirectorySort, Store, StoreError};
use crate::transport::{Node, NodeError};
use crate::wire::identity::{GroupIdentity, IdentityError};
use crate::wire::proto as pb;
use crate::wire::stamp::{ChallengeKey, MESSAGE_ROUNDS, STAMP_MAX_LEN};

/// The server destination: app `meshchat`, aspect `groupserver`.
pub const SERVER_APP: &str = "meshchat";
pub const SERVER_ASPECTS: &str = "groupserver";
pub const SERVER_ASPECT: &str = "meshchat.groupserver";

/// Bytes of a `DirectoryResponse` that still fit one link packet with the response envelope
/// (RNS link MDU 431, minus the msgpack `[request_id, response]` wrapper and the `Response` framing).
const ONE_PACKET_PAYLOAD: usize = 380;

#[derive(Debug, thiserror::Error)]
pub enum HostingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored server identity is unusable: {0}")]
    Identity(#[from] IdentityError),
    #[error("cannot register the server destination: {0}")]
    Node(#[from] NodeError),
}

/// The paths of the server destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Directory,
    Create,
    Delete,
    Transfer,
}

impl Path {
    pub const ALL: &'static [(Path, &'static str)] = &[
        (Path::Directory, "/api/v1/groups"),
        (Path::Create, "/api/v1/groups/create"),
        (Path::Delete, "/api/v1/groups/delete"),
        (Path::Transfer, "/api/v1/groups/transfer"),
    ];

    pub fn from_path_hash(hash: &[u8]) -> Option<Path> {
        crate::api::lookup_path(Self::ALL, hash).map(|(p, _)| p)
    }
}

/// The metrics label of a request to the server destination.
pub fn path_label(path_hash: &[u8]) -> &'static str {
    crate::api::lookup_path(Path::ALL, path_hash).map_or("unknown", |(_, s)| s)
}

/// The registered server destination and the creation guards' state.
pub struct Hosting {
    pub dest: [u8; 16],
    cfg: HostingConfig,
    allow: HashSet<String>,
    challenge: ChallengeKey,
    /// Creation times per identity within the last hour. The lock also serialises creations, so
    /// two concurrent requests cannot both pass a quota with one slot left.
    creations: tokio::sync::Mutex<HashMap<String, VecDeque<Instant>>>,
    /// The last public-group count read from the store: an announce made during a database fault
    /// carries it rather than a false zero.
    public_groups: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Hosting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosting").field("dest", &hex::encode(self.dest)).finish_non_exhaustive()
    }
}

const HOUR: Duration = Duration::from_secs(3600);

impl Hosting {
    /// Loads (or makes, on first start) the server identity and registers its destination.
    /// Call before the interfaces open, so path requests for it are answered from the start.
    pub async fn start(store: &Store, node: &Node, cfg: HostingConfig) -> Result<Arc<Hosting>, HostingError> {
        let key = store.server_identity(|| GroupIdentity::generate().private_key.to_vec()).await?;
        let id = GroupIdentity::from_private_key(&key)?;
        let dest = node.register_destination(&id.private_key, SERVER_APP, SERVER_ASPECTS).await?;
        tracing::info!(server = %hex::encode(dest), identity = %hex::encode(id.hash), "hosting service destination registered");
        let allow = cfg.allow_list.iter().filter_map(|h| crate::wire::identity::parse_hash(h)).map(hex::encode).collect();
        Ok(Arc::new(Hosting { dest, cfg, allow, challenge: ChallengeKey::for_group(&key), creations: Default::default(), public_groups: Default::default() }))
    }

    /// The announce app_data: a `ServerAnnounce`.
    pub async fn announce_data(&self, store: &Store) -> Vec<u8> {
        use std::sync::atomic::Ordering;
        let public_groups = match store.count_public_groups().await {
            Ok(n) => {
                self.public_groups.store(n, Ordering::Relaxed);
                n
            }
            Err(err) => {
                tracing::warn!(%err, "cannot count public groups; announcing the last count");
                self.public_groups.load(Ordering::Relaxed)
            }
        };
        pb::ServerAnnounce {
            name: self.cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            public_groups: public_groups.min(u64::from(u32::MAX)) as u32,
            creation_policy: match self.cfg.creation_policy {
                CreationPolicy::Open => pb::CreationPolicy::Open,
                CreationPolicy::Closed => pb::CreationPolicy::Closed,
                CreationPolicy::AllowList => pb::CreationPolicy::AllowList,
            } as i32,
            create_stamp_cost: self.cfg.create_stamp_cost,
            api_version: crate::api::API_VERSION,
        }
        .encode_to_vec()
    }

    /// Announces the server destination now and then every `hosting.announce_interval_secs`,
    /// until `stop`. One announce per interval is outside the group budget: it cannot crowd the
    /// groups out.
    pub async fn announce_every_interval(self: Arc<Self>, node: Node, store: Store, stop: tokio_util::sync::CancellationToken) {
        let every = Duration::from_secs(self.cfg.announce_interval_secs.max(1));
        loop {
            self.announce_once(&node, &store).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Announces the server destination once, with the current directory summary.
    pub async fn announce_once(&self, node: &Node, store: &Store) {
        let data = self.announce_data(store).await;
        match node.announce(self.dest, &data).await {
            Ok(()) => crate::metrics::announce_sent(SERVER_ASPECT),
            Err(err) => tracing::warn!(%err, "server announce failed"),
        }
    }

    /// Whether `who` created `create_rate_per_hour` groups within the last hour.
    fn over_rate(&self, log: &mut HashMap<String, VecDeque<Instant>>, who: &str) -> bool {
        let limit = self.cfg.create_rate_per_hour as usize;
        let Some(times) = log.get_mut(who) else { return false };
        while times.front().is_some_and(|t| t.elapsed() > HOUR) {
            times.pop_front();
        }
        limit > 0 && times.len() >= limit
    }
}

/// Handles one request to the server destination.
pub async fn handle(h: &Hosting, s: &Services, caller: Caller, path_hash: &[u8], body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    let path = Path::from_path_hash(path_hash).ok_or_else(|| ApiError::new(pb::ErrorCode::NotFound, "unknown path"))?;
    match path {
        Path::Directory => directory(s, &body).await,
        Path::Create => create(h, s, &caller, &body).await,
        Path::Delete => {
            let r: pb::DeleteGroupRequest = decode(&body)?;
            on_group(s, caller, &r.group_destination, Op::DeleteGroup).await
        }
        Path::Transfer => {
            let r: pb::TransferFounderRequest = decode(&body)?;
            let identity = hash16(&r.identity_hash, "identity_hash")?;
            on_group(s, caller, &r.group_destination, Op::TransferFounder { identity }).await
        }
    }
}

/// Runs a founder operation on a named group through its actor, then brings the supervisor in
/// line at once (a deleted group stops answering before this returns).
async fn on_group(s: &Services, caller: Caller, group_dest: &[u8], op: Op) -> Result<Vec<u8>, ApiError> {
    if caller == Caller::Anonymous {
        return Err(GroupError::Unauthenticated.into());
    }
    let dest = group_destination(group_dest)?;
    let route = crate::api::group_route(&s.registry, &dest)?;
    let reply = run_op(&s.supervisor, &route, caller, op).await.map_err(|err| crate::api::actor_unavailable(err, route.group_id))?;
    reply.map_err(ApiError::from)?;
    Ok(pb::Ack {}.encode_to_vec())
}

fn entry(row: &DirectoryRow) -> pb::DirectoryEntry {
    let private = row.visibility != "public";
    let public_key = GroupIdentity::from_private_key(&row.identity_private_key).map(|i| i.public_key.to_vec()).unwrap_or_default();
    pb::DirectoryEntry {
        name: if private { crate::group::PRIVATE_GROUP_NAME.to_owned() } else { row.public_name.clone() },
        visibility: if private { pb::Visibility::Private } else { pb::Visibility::Public } as i32,
        group_destination: hex::decode(&row.group_dest_hash).unwrap_or_default(),
        lxmf_destination: hex::decode(&row.lxmf_dest_hash).unwrap_or_default(),
        member_count: row.member_count.clamp(0, i64::from(u32::MAX)) as u32,
        join_stamp_cost: row.join_stamp_cost.max(0) as u32,
        post_stamp_cost: row.post_stamp_cost.max(0) as u32,
        created_at: row.created_at,
        public_key,
        last_activity_at: row.last_activity_at,
    }
}

/// Decodes a directory request into its query; `true` with it when the answer must fit one packet.
pub fn directory_query(body: &[u8], limits: &LimitsConfig) -> Result<(DirectoryQuery, bool), ApiError> {
    let r: pb::DirectoryRequest = decode(body)?;
    let sort = match pb::DirectorySort::try_from(r.sort) {
        Ok(pb::DirectorySort::Members) => DirectorySort::Members,
        Ok(pb::DirectorySort::Activity) => DirectorySort::Activity,
        Err(_) => return Err(ApiError::invalid(format!("unknown sort {}", r.sort))),
    };
    let one_packet = r.limit == 0;
    let limit = if one_packet { u64::from(limits.default_page) } else { u64::from(r.limit.min(limits.max_page)) };
    let filter = crate::group::clean_name(&r.name_filter, 64).to_lowercase();
    Ok((DirectoryQuery { offset: u64::from(r.offset), limit, sort, name_filter: (!filter.is_empty()).then_some(filter) }, one_packet))
}

/// A founder operation's `group_destination`.
pub fn group_destination(bytes: &[u8]) -> Result<[u8; 16], ApiError> {
    bytes.try_into().map_err(|_| ApiError::invalid("group_destination must be a 16-byte destination hash"))
}

/// Whether a creation request asks for a private group.
pub fn create_private(visibility: i32) -> Result<bool, ApiError> {
    match pb::Visibility::try_from(visibility) {
        Ok(pb::Visibility::Public) => Ok(false),
        Ok(pb::Visibility::Private) => Ok(true),
        Err(_) => Err(ApiError::invalid(format!("unknown visibility {visibility}"))),
    }
}

async fn directory(s: &Services, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    crate::metrics::directory_request();
    let (q, one_packet) = directory_query(body, &s.limits)?;
    let (rows, total) = s.store.directory(&q).await.map_err(|err| {
        tracing::error!(%err, "directory query failed");
        ApiError::new(pb::ErrorCode::Internal, "internal error")
    })?;
    let mut resp = pb::DirectoryResponse { groups: Vec::new(), total: total.min(u64::from(u32::MAX)) as u32 };
    for row in &rows {
        let e = entry(row);
        // The default page stops where one more entry would push the response out of one packet.
        if one_packet && !resp.groups.is_empty() && resp.encoded_len() + e.encoded_len() + 3 > ONE_PACKET_PAYLOAD {
            break;
        }
        resp.groups.push(e);
    }
    Ok(resp.encode_to_vec())
}

/// Counts one refusal and returns it.
fn refuse(outcome: &'static str, err: ApiError) -> ApiError {
    crate::metrics::group_created(outcome);
    err
}

fn stamp_required(h: &Hosting, who: &[u8], message: &str) -> ApiError {
    let challenge = h.challenge.issue(&h.dest, who, (crate::store::now_ms() / 1000) as u64, rand::random());
    ApiError { stamp_cost: h.cfg.create_stamp_cost, challenge, ..ApiError::new(pb::ErrorCode::StampRequired, message) }
}

/// Creates a group for the caller. The guards run cheapest first: identify, policy and the rate
/// limit (memory only), then the creation stamp, before anything touches the database or makes
/// a key; then the quotas and the creation itself, one creation at a time.
async fn create(h: &Hosting, s: &Services, caller: &Caller, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let r: pb::CreateGroupRequest = decode(body)?;
    let Caller::Identity(who) = caller else { return Err(GroupError::Unauthenticated.into()) };
    let forbidden = |m: &str| ApiError::new(pb::ErrorCode::Forbidden, m);
    match h.cfg.creation_policy {
        CreationPolicy::Closed => return Err(refuse("refused_policy", forbidden("this server does not take new groups"))),
        CreationPolicy::AllowList if !h.allow.contains(who) => {
            return Err(refuse("refused_policy", forbidden("only allow-listed identities may create groups here")));
        }
        _ => {}
    }
    if h.over_rate(&mut *h.creations.lock().await, who) {
        return Err(refuse("rate_limited", ApiError::new(pb::ErrorCode::RateLimited, "too many groups created in the last hour")));
    }
    let who_bytes = hex::decode(who).unwrap_or_default();
    if h.cfg.create_stamp_cost > 0 {
        if r.stamp.is_empty() || r.challenge.is_empty() {
            return Err(refuse("stamp_missing", stamp_required(h, &who_bytes, "creating a group requires a stamp")));
        }
        let now = (crate::store::now_ms() / 1000) as u64;
        if r.stamp.len() > STAMP_MAX_LEN || !h.challenge.verify(&r.challenge, &h.dest, &who_bytes, now) {
            return Err(refuse("stamp_invalid", stamp_required(h, &who_bytes, "the challenge is unknown or expired; stamp the new one")));
        }
        let Some(identity) = crate::wire::identity::parse_hash(who) else { return Err(GroupError::Unauthenticated.into()) };
        let check = crate::stamps::Check {
            purpose: crate::stamps::Purpose::Create,
            group: None,
            identity,
            material: r.challenge.clone(),
            challenge: true,
            rounds: MESSAGE_ROUNDS,
            stamp: r.stamp.clone(),
            base_cost: h.cfg.create_stamp_cost,
        };
        match s.stamps.check(check).await {
            Ok(true) => {}
            Ok(false) => return Err(refuse("stamp_invalid", stamp_required(h, &who_bytes, "the stamp does not meet the cost"))),
            Err(crate::stamps::Refused::ChallengeSpent) => {
                return Err(refuse("stamp_invalid", stamp_required(h, &who_bytes, "this challenge already failed once; stamp the new one")));
            }
            Err(why) => return Err(refuse("rate_limited", ApiError::new(pb::ErrorCode::RateLimited, why.to_string()))),
        }
    }
    let private = create_private(r.visibility)?;
    let mut log = h.creations.lock().await;
    // Again under the lock: a concurrent creation may have used the last slot.
    if h.over_rate(&mut log, who) {
        return Err(refuse("rate_limited", ApiError::new(pb::ErrorCode::RateLimited, "too many groups created in the last hour")));
    }
    let store_err = |err: StoreError| ApiError::from(GroupError::from(err));
    if h.cfg.max_groups > 0 && s.store.count_groups().await.map_err(store_err)? >= h.cfg.max_groups {
        return Err(refuse("refused_quota", forbidden("this server hosts as many groups as it may")));
    }
    let founded = s.store.count_groups_founded_by(who).await.map_err(store_err)?;
    if h.cfg.max_groups_per_identity > 0 && founded >= h.cfg.max_groups_per_identity {
        return Err(refuse("refused_quota", forbidden("you founded as many groups as this server allows")));
    }
    let g = create_group(
        &s.store,
        CreateGroup {
            name: r.name,
            private,
            private_name: (!r.private_name.trim().is_empty()).then_some(r.private_name),
            join_stamp_cost: r.join_stamp_cost,
            post_stamp_cost: r.post_stamp_cost,
            founder: Some(who.clone()),
            private_key: None,
        },
    )
    .await?;
    log.entry(who.clone()).or_default().push_back(Instant::now());
    drop(log);
    crate::metrics::group_created("created");
    crate::metrics::groups_per_founder(founded + 1);
    tracing::info!(group = g.id, founder = %who, name = %g.public_name, "group created through the hosting service");
    // Served and announced before the founder hears back.
    let _ = s.supervisor.send(Refresh(g.id)).await;
    let row = DirectoryRow {
        id: g.id,
        public_name: g.public_name.clone(),
        visibility: "public".into(),
        group_dest_hash: g.group_dest_hash.clone(),
        lxmf_dest_hash: g.lxmf_dest_hash.clone(),
        identity_private_key: g.identity_private_key.clone(),
        join_stamp_cost: g.join_stamp_cost,
        post_stamp_cost: g.post_stamp_cost,
        created_at: g.created_at,
        member_count: 1,
        last_activity_at: g.created_at,
    };
    // The founder sees the real name and visibility.
    let mut e = entry(&row);
    e.visibility = if private { pb::Visibility::Private } else { pb::Visibility::Public } as i32;
    Ok(pb::CreateGroupResponse { group: Some(e) }.encode_to_vec())
}
