//! The router: drains node events, keeps per-link caller state, and sends each request to the
//! right group's handler. Link events are handled in order (an identify always precedes the
//! requests after it); each request then runs in its own task so a slow one blocks nobody.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::mpsc;

use crate::actors::group::Call;
use crate::actors::supervisor::{DestKind, Registry, Route, Supervisor, lookup, run_op};
use crate::api::{
    ApiError, DecodeContext, Endpoint, decode_json_request, decode_request, encode_json_reply, encode_reply, error_response, json_error, ok_response,
};
use crate::group::{Caller, GroupError, Op};
use crate::stamps::StampPool;
use crate::store::Store;
use crate::transport::node::{Node, NodeEvent};
use crate::wire::identity::{GROUP_ASPECT, name_hash};
use crate::wire::proto::ErrorCode;
use crate::wire::stamp::MESSAGE_ROUNDS;

/// What request handling needs, shared by every request task.
pub struct Services {
    pub node: Node,
    pub registry: Registry,
    pub supervisor: Addr<Supervisor>,
    pub stamps: StampPool,
    pub store: Store,
    pub limits: crate::config::LimitsConfig,
    /// Inbound LXMF (posts through `lxmf.delivery`).
    pub lxmf: crate::lxmf::Inbound,
    /// Outbound LXMF and delivery proofs.
    pub courier: Arc<crate::lxmf::courier::Courier>,
    /// The propagation node, for syncing group inboxes.
    pub propagation: Arc<crate::lxmf::propagation::Propagation>,
    /// The server destination (directory, group creation).
    pub hosting: Arc<crate::hosting::Hosting>,
}

struct LinkState {
    dest: [u8; 16],
    identity: Option<String>,
}

/// Consumes node events until the node stops.
pub async fn run(services: Arc<Services>, mut events: mpsc::Receiver<NodeEvent>) {
    let mut links: HashMap<[u8; 16], LinkState> = HashMap::new();
    let group_name_hash = name_hash(GROUP_ASPECT);
    let lxmf_name_hash = name_hash(crate::wire::identity::LXMF_ASPECT);
    while let Some(ev) = events.recv().await {
        match ev {
            NodeEvent::LinkEstablished { dest, link_id } => {
                links.insert(link_id, LinkState { dest, identity: None });
                crate::metrics::links_open(links.len());
            }
            NodeEvent::LinkIdentified { link_id, identity_hash, public_key, .. } => {
                let hex_hash = hex::encode(identity_hash);
                if let Some(l) = links.get_mut(&link_id) {
                    l.identity = Some(hex_hash.clone());
                }
                remember(&services.store, hex_hash, public_key);
            }
            NodeEvent::LinkClosed { link_id, .. } => {
                links.remove(&link_id);
                crate::metrics::links_open(links.len());
            }
            NodeEvent::Request { dest, link_id, request_id, path_hash, data, requested_at } => {
                let arrived_at = crate::store::now_ms() as f64 / 1000.0;
                let caller = match links.get(&link_id).and_then(|l| l.identity.clone()) {
                    Some(h) => Caller::Identity(h),
                    None => Caller::Anonymous,
                };
                let dest = links.get(&link_id).map(|l| l.dest).unwrap_or(dest);
                let s = services.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let endpoint = Endpoint::from_path_hash(&path_hash);
                    // The server destination has its own paths and handler.
                    let server = dest == s.hosting.dest;
                    let label = if server { crate::hosting::path_label(&path_hash) } else { endpoint.map(Endpoint::path).unwrap_or("unknown") };
                    // A JSON object or a nil body is MeshChat's prototype dialect; the server
                    // destination speaks protobuf only, where nil is the empty message.
                    let dialect = if !server && crate::wire::meshchat_json::is_json(data.as_deref()) { Dialect::Json } else { Dialect::Protobuf };
                    let result = if server {
                        crate::hosting::handle(&s, caller.clone(), &path_hash, data.unwrap_or_default()).await.map(ok_response)
                    } else {
                        handle(&s, dest, caller.clone(), endpoint, dialect, data).await
                    };
                    let (bytes, outcome) = match result {
                        Ok(payload) => (payload, "ok"),
                        Err(err) => {
                            tracing::info!(path = label, caller = caller.label(), dialect = dialect.label(), code = err.label(), message = %err.message, "request refused");
                            let bytes = match dialect {
                                Dialect::Protobuf => error_response(&err),
                                Dialect::Json => json_error(&err),
                            };
                            (bytes, err.label())
                        }
                    };
                    let hold = response_hold(Duration::from_millis(s.limits.response_floor_ms), requested_at, arrived_at);
                    tokio::time::sleep_until((started + hold).into()).await;
                    if let Err(err) = s.node.respond(link_id, request_id, bytes).await {
                        tracing::warn!(%err, path = label, "cannot send response");
                    }
                    let group = lookup(&s.registry, &dest).map(|r| r.group_id);
                    crate::metrics::request(label, dialect.label(), outcome, started.elapsed(), group);
                });
            }
            NodeEvent::Packet { dest, data, packet_hash } => {
                services.lxmf.opportunistic(services.clone(), dest, data, packet_hash);
            }
            NodeEvent::LinkPacket { dest, data, .. } | NodeEvent::LinkResource { dest, data, .. } => {
                services.lxmf.direct(services.clone(), dest, data);
            }
            NodeEvent::Announce { dest, public_key, name_hash: nh, app_data, ratchet } => {
                if let Some(r) = ratchet {
                    services.courier.note_ratchet(dest, r);
                }
                if nh == lxmf_name_hash {
                    services.courier.note_delivery_announce(dest, &app_data);
                }
                if crate::lxmf::propagation::Propagation::is_pn_announce(&nh) {
                    services.propagation.note_announce(dest, &app_data);
                }
                if nh == group_name_hash {
                    let store = services.store.clone();
                    tokio::spawn(async move {
                        let id = hex::encode(crate::wire::identity::identity_hash(&public_key));
                        if let Err(err) = store.upsert_announce(&hex::encode(dest), GROUP_ASPECT, &id, public_key.to_vec(), app_data, 0).await {
                            tracing::debug!(%err, "cannot record announce");
                        }
                    });
                }
            }
            NodeEvent::Proof { packet_hash } => services.courier.proof(packet_hash),
            NodeEvent::EventsLost { channel, count } => {
                tracing::warn!(channel, count, "transport events lost");
                crate::metrics::transport_events_lost(channel, count);
            }
        }
    }
}

/// How long after its arrival a request's answer may go out at the earliest.
///
/// RNS 1.5.7's `Link.request` sends the request packet before its `RequestReceipt` joins the
/// link's pending requests, and drops an answer for a request it does not know yet. On loopback
/// and LANs our answer can win that race. The floor gives the client time to register; the
/// request's travel time (the server's clock at arrival minus the client's `requested_at`)
/// counts towards it, so on a slow interface, where the answer's way back alone is longer than
/// the window, nothing is held. A client clock that runs ahead reads as no travel time (the full
/// floor); one far behind reads as a slow link (no hold, the behaviour without a floor).
pub fn response_hold(floor: Duration, requested_at_s: f64, arrived_at_s: f64) -> Duration {
    let travel = arrived_at_s - requested_at_s;
    if !travel.is_finite() || travel <= 0.0 {
        return floor;
    }
    floor.saturating_sub(Duration::try_from_secs_f64(travel).unwrap_or(Duration::MAX))
}

/// Keeps a verified key, off the event loop.
pub fn remember(store: &Store, identity_hash: String, public_key: [u8; 64]) {
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(err) = store.remember_identity(&identity_hash, &public_key).await {
            tracing::debug!(%err, "cannot remember an identity");
        }
    });
}

/// The encoding a caller speaks, chosen per request by its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    /// `proto/meshgroup.proto`, in a `Response` envelope.
    Protobuf,
    /// MeshChat's group-chat prototype: JSON objects, `{"error": …}` on failure.
    Json,
}

impl Dialect {
    fn label(self) -> &'static str {
        match self {
            Dialect::Protobuf => "protobuf",
            Dialect::Json => "json",
        }
    }
}

/// Handles one API request: route, decode in the caller's dialect, check a join stamp off the
/// actor, call the actor, encode the reply in the same dialect. Both dialects share everything
/// between the decode and the encode.
async fn handle(
    s: &Services,
    dest: [u8; 16],
    caller: Caller,
    endpoint: Option<Endpoint>,
    dialect: Dialect,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, ApiError> {
    let route =
        lookup(&s.registry, &dest).filter(|r| r.kind == DestKind::Api).ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group on this server"))?;
    let endpoint = endpoint.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "unknown path"))?;
    let size = body.as_ref().map_or(0, Vec::len);
    if size > s.limits.max_request_bytes {
        return Err(ApiError::invalid(format!("request of {size} bytes is over the limit of {}", s.limits.max_request_bytes)));
    }
    let now_s = crate::store::now_ms() as f64 / 1000.0;
    let ctx = DecodeContext {
        group_id: route.group_id,
        group_lxmf_hash: &route.lxmf_dest,
        caller: &caller,
        default_page: s.limits.default_page,
        max_page: s.limits.max_page,
        now_s,
    };
    let decoded = match dialect {
        Dialect::Protobuf => decode_request(endpoint, body.as_deref().unwrap_or_default(), &ctx)?,
        Dialect::Json => decode_json_request(endpoint, body.as_deref(), &ctx)?,
    };
    let mut op = decoded.op;
    if let (Op::Join { stamp_verified, .. }, Some((challenge, stamp))) = (&mut op, decoded.join_stamp) {
        *stamp_verified = check_join_stamp(s, &route, &caller, &challenge, stamp).await?;
    }
    let reply = run_op(&s.supervisor, &route, caller.clone(), op).await;
    let reply = match reply {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(%err, group = route.group_id, "group actor unavailable");
            return Err(ApiError::new(ErrorCode::Internal, "group temporarily unavailable"));
        }
    };
    match reply {
        Ok(r) => match dialect {
            Dialect::Protobuf => Ok(ok_response(encode_reply(r))),
            Dialect::Json => encode_json_reply(endpoint, r),
        },
        Err(GroupError::StampRequired { cost }) => Err(stamp_required(&route, &caller, cost, "this group requires a join stamp")),
        Err(GroupError::Store(err)) => {
            tracing::error!(%err, group = route.group_id, path = endpoint.path(), "store failure");
            Err(GroupError::Store(err).into())
        }
        Err(other) => Err(other.into()),
    }
}

fn stamp_required(route: &Route, caller: &Caller, cost: u32, message: &str) -> ApiError {
    let identity = match caller {
        Caller::Identity(h) => hex::decode(h).unwrap_or_default(),
        _ => Vec::new(),
    };
    let challenge = route.challenge.issue(&route.group_dest, &identity, (crate::store::now_ms() / 1000) as u64);
    ApiError { stamp_cost: cost, challenge, ..ApiError::new(ErrorCode::StampRequired, message) }
}

/// Checks a join stamp: the challenge must be ours (cheap, first), the work valid (on the pool).
/// Returns whether it is good enough; a bad one is an error that carries a fresh challenge.
async fn check_join_stamp(s: &Services, route: &Route, caller: &Caller, challenge: &[u8], stamp: Vec<u8>) -> Result<bool, ApiError> {
    let Caller::Identity(h) = caller else { return Ok(false) };
    let identity = hex::decode(h).unwrap_or_default();
    let now = (crate::store::now_ms() / 1000) as u64;
    // The cost is the group's current one, read through a cheap info call.
    let cost = match route.addr.send(Call { caller: caller.clone(), op: Op::Info }).await {
        Ok(Ok(crate::group::Reply::Info(v))) => v.join_stamp_cost,
        _ => return Ok(false),
    };
    if cost == 0 {
        return Ok(true);
    }
    if !route.challenge.verify(challenge, &route.group_dest, &identity, now) {
        crate::metrics::stamp_checked("join", "invalid", route.group_id);
        return Err(stamp_required(route, caller, cost, "the challenge is unknown or expired; stamp the new one"));
    }
    match s.stamps.value(challenge.to_vec(), MESSAGE_ROUNDS, stamp).await {
        Err(_) => {
            crate::metrics::stamp_checked("join", "busy", route.group_id);
            Err(ApiError::new(ErrorCode::RateLimited, "the server is busy checking stamps; retry shortly"))
        }
        Ok(v) if v >= cost => {
            crate::metrics::stamp_checked("join", "valid", route.group_id);
            Ok(true)
        }
        Ok(_) => {
            crate::metrics::stamp_checked("join", "invalid", route.group_id);
            Err(stamp_required(route, caller, cost, "the stamp does not meet the cost"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_counts_the_request_travel_time() {
        let floor = Duration::from_millis(20);
        assert_eq!(response_hold(floor, 100.0, 100.005), Duration::from_millis(15), "loopback: most of the floor");
        assert_eq!(response_hold(floor, 100.0, 102.5), Duration::ZERO, "a slow interface: nothing held");
        assert_eq!(response_hold(floor, 100.0, 99.0), floor, "a client clock ahead of ours: the whole floor");
        assert_eq!(response_hold(floor, f64::NAN, 100.0), floor);
        assert_eq!(response_hold(floor, 0.0, 1e300), Duration::ZERO);
        assert_eq!(response_hold(Duration::ZERO, 100.0, 100.0), Duration::ZERO, "0 turns it off");
    }
}
