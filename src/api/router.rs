//! The router: drains node events, keeps per-link caller state, and sends each request to the
//! right group's handler. Link events are handled in order (an identify always precedes the
//! requests after it); each request then runs in its own task so a slow one blocks nobody.
//! Those tasks are bounded, over all links and per link: a request beyond either limit is
//! answered `rate_limited` at once and counted, never queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::actors::supervisor::{Route, lookup, run_op};
use crate::api::admission::{Admission, LinkRefused};
use crate::api::hosting::Hosting;
use crate::api::lxmf::Inbound;
use crate::api::services::Services;
use crate::api::{
    ApiError, DecodeContext, Endpoint, decode_json_request, decode_request, encode_json_reply, encode_reply, error_response, json_error, ok_response,
};
use crate::group::{Caller, GroupError, Op};
use crate::stamps::{Check, Purpose, Refused};
use crate::transport::{NodeError, NodeEvent, with_backpressure};
use crate::wire::identity::{GROUP_ASPECT, name_hash};
use crate::wire::proto::ErrorCode;
use crate::wire::stamp::MESSAGE_ROUNDS;

/// Why a request was refused before it ran.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    ServerBusy,
    LinkBusy,
    ShuttingDown,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::ServerBusy => "server_busy",
            Refusal::LinkBusy => "link_busy",
            Refusal::ShuttingDown => "shutting_down",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::ServerBusy => "the server is handling too many requests; retry shortly",
            Refusal::LinkBusy => "this link has too many requests in progress; wait for their answers",
            Refusal::ShuttingDown => "the server is shutting down; retry after it is back",
        }
    }
}

/// Consumes node events until the node stops (or the router is stopped, after the shutdown grace).
pub async fn run(services: Arc<Services>, inbound: Arc<Inbound>, hosting: Arc<Hosting>, events: &mut mpsc::Receiver<NodeEvent>) {
    let mut links = Admission::new(&services.limits);
    let group_name_hash = name_hash(GROUP_ASPECT);
    let lxmf_name_hash = name_hash(crate::wire::identity::LXMF_ASPECT);
    let in_progress = Arc::new(Semaphore::new(services.limits.max_inflight_requests.max(1)));
    let mut sweep = tokio::time::interval(IDLE_SWEEP);
    loop {
        let ev = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = sweep.tick() => {
                for link_id in links.idle(Instant::now()) {
                    links.closed(&link_id);
                    close_link(&services, link_id, "idle");
                }
                crate::metrics::links_open(links.len());
                continue;
            }
        };
        match ev {
            NodeEvent::LinkEstablished { dest, link_id, iface } => {
                if let Err(why) = links.open(link_id, dest, iface) {
                    refuse_link(&services, link_id, "link", why);
                }
                crate::metrics::links_open(links.len());
            }
            NodeEvent::LinkIdentified { link_id, identity_hash, public_key, .. } => {
                let hex_hash = hex::encode(identity_hash);
                if let Err(why) = links.identified(link_id, &hex_hash) {
                    links.closed(&link_id);
                    refuse_link(&services, link_id, "link", why);
                    crate::metrics::links_open(links.len());
                    continue;
                }
                services.courier.note_heard(identity_hash);
                services.remember(identity_hash, public_key);
            }
            NodeEvent::LinkClosed { link_id, .. } => {
                links.closed(&link_id);
                crate::metrics::links_open(links.len());
            }
            NodeEvent::Transfer { link_id, hash, stage } => {
                if let Err(why) = links.transfer(link_id, hash, stage) {
                    links.closed(&link_id);
                    refuse_link(&services, link_id, "transfer", why);
                    crate::metrics::links_open(links.len());
                }
            }
            NodeEvent::Request { dest, link_id, request_id, path_hash, data, requested_at } => {
                let arrived_at = crate::store::now_ms() as f64 / 1000.0;
                // A link whose establishment event was lost still gets its share.
                let link = links.get_or_insert(link_id, dest);
                let caller = match link.identity.clone() {
                    Some(h) => Caller::Identity(h),
                    None => Caller::Anonymous,
                };
                let dest = link.dest;
                // The server destination has its own paths and handler, and speaks protobuf only
                // (nil there is the empty message). On a group destination a JSON object or a nil
                // body is MeshChat's prototype dialect.
                let server = dest == hosting.dest;
                let dialect = if !server && crate::wire::meshchat_json::is_json(data.as_deref()) { Dialect::Json } else { Dialect::Protobuf };
                let permits = match admit(&services.life, &link.slots, &in_progress) {
                    Ok(p) => p,
                    Err(why) => {
                        if services.refusal_log.allow() {
                            tracing::warn!(reason = why.label(), "request refused at a limit");
                        }
                        crate::metrics::work_refused("request", why.label());
                        let err = ApiError::new(ErrorCode::RateLimited, why.message());
                        // Not retried: the router does not wait on a flooder's behalf.
                        if services.node.respond(link_id, request_id, dialect.error(&err)).await.is_err() {
                            crate::metrics::response_dropped("refusal_not_sent");
                        }
                        continue;
                    }
                };
                let (s, h) = (services.clone(), hosting.clone());
                services.life.spawn(async move {
                    let _permits = permits;
                    let started = Instant::now();
                    let endpoint = Endpoint::from_path_hash(&path_hash);
                    let label = if server { crate::api::hosting::path_label(&path_hash) } else { endpoint.map(Endpoint::path).unwrap_or("unknown") };
                    // One size guard for both destinations, before any decoding.
                    let result = match crate::api::within_limit(data.as_deref().unwrap_or_default(), s.limits.max_request_bytes) {
                        Err(err) => Err(err),
                        Ok(()) if server => crate::api::hosting::handle(&h, &s, caller.clone(), &path_hash, data.unwrap_or_default()).await.map(ok_response),
                        Ok(()) => handle(&s, dest, caller.clone(), endpoint, dialect, data).await,
                    };
                    let (bytes, outcome) = match result {
                        Ok(payload) => (payload, "ok"),
                        Err(err) => {
                            // Internal failures always; refusals of bad input at a bounded rate.
                            if err.code == ErrorCode::Internal || s.refusal_log.allow() {
                                tracing::info!(
                                    path = label,
                                    caller = caller.label(),
                                    dialect = dialect.label(),
                                    code = err.label(),
                                    message = %err.message,
                                    cause = %err.cause_text(),
                                    "request refused"
                                );
                            }
                            (dialect.error(&err), err.label())
                        }
                    };
                    let hold = response_hold(Duration::from_millis(s.limits.response_floor_ms), requested_at, arrived_at);
                    tokio::time::sleep_until((started + hold).into()).await;
                    if let Err(err) = with_backpressure(|| s.node.respond(link_id, request_id, bytes.clone())).await {
                        tracing::warn!(%err, path = label, "cannot send response");
                        crate::metrics::response_dropped(if matches!(err, NodeError::UnknownLink(_)) { "link_closed" } else { "queue_full" });
                    }
                    let group = lookup(&s.registry, &dest).map(|r| r.group_id);
                    crate::metrics::request(label, dialect.label(), outcome, started.elapsed(), group);
                });
            }
            NodeEvent::Packet { dest, data, packet_hash } => {
                inbound.opportunistic(dest, data, packet_hash);
            }
            NodeEvent::LinkPacket { dest, link_id, data } | NodeEvent::LinkResource { dest, link_id, data } => {
                links.touch(&link_id);
                inbound.direct(dest, data).await;
            }
            NodeEvent::Announce { dest, public_key, name_hash: nh, app_data, ratchet } => {
                if let Some(r) = ratchet {
                    services.courier.note_ratchet(dest, r);
                }
                if nh == lxmf_name_hash {
                    services.courier.note_delivery_announce(dest, &app_data);
                    // Only answers to our own path requests: announces cost nothing to make,
                    // and each of these costs one store write.
                    if services.courier.path_arrived(dest) {
                        services.fanout.do_send(crate::actors::fanout::MemberReachable(crate::wire::identity::identity_hash(&public_key)));
                    }
                }
                if crate::lxmf::propagation::Propagation::is_pn_announce(&nh) {
                    services.propagation.note_announce(dest, &app_data);
                }
                if nh == group_name_hash {
                    let store = services.store.clone();
                    services.side_write("record_announce", async move {
                        let id = hex::encode(crate::wire::identity::identity_hash(&public_key));
                        store.upsert_announce(&hex::encode(dest), GROUP_ASPECT, &id, public_key.to_vec(), app_data, 0).await
                    });
                }
            }
            NodeEvent::Proof { packet_hash } => services.courier.proof(packet_hash),
            NodeEvent::NewListeners { cause } => {
                tracing::info!(cause, "new listeners; re-announcing the groups within the announce budget");
                services.supervisor.do_send(crate::actors::supervisor::ReannounceAll);
                let (hosting, node, store) = (hosting.clone(), services.node.clone(), services.store.clone());
                services.life.spawn(async move { hosting.announce_once(&node, &store).await });
            }
            NodeEvent::EventsLost { channel, count } => {
                tracing::warn!(channel, count, "transport events lost");
                crate::metrics::transport_events_lost(channel, count);
            }
        }
    }
}

/// How often links are checked for idleness (see [`Admission::idle`]).
const IDLE_SWEEP: Duration = Duration::from_secs(5);

/// Tears a link down in the background: the router goes on with the next event.
fn close_link(services: &Arc<Services>, link_id: [u8; 16], why: &'static str) {
    let node = services.node.clone();
    services.life.spawn(async move {
        // An unknown link has closed already; a failed close frame still closed it locally.
        if let Err(err) = node.close_link(link_id).await {
            tracing::debug!(%err, why, "link close");
        }
    });
}

/// A link over a cap: torn down, counted, and logged within the refusal budget.
fn refuse_link(services: &Arc<Services>, link_id: [u8; 16], kind: &'static str, why: LinkRefused) {
    if services.refusal_log.allow() {
        tracing::warn!(kind, reason = why.label(), link = %hex::encode(link_id), "link torn down at a limit: {why}");
    }
    crate::metrics::work_refused(kind, why.label());
    close_link(services, link_id, why.label());
}

/// A group whose adaptive stamp cost rose is announced at once; decay and the pool's clean-up run
/// on a slow tick. Runs until `stop`.
pub async fn announce_cost_changes(s: Arc<Services>, stop: tokio_util::sync::CancellationToken) {
    const TICK: std::time::Duration = std::time::Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = s.stamps.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        for group in s.stamps.tick() {
            s.supervisor.do_send(crate::actors::supervisor::AnnounceSoon(group));
        }
    }
}

/// Takes a slot of the link's share and one of the server's, or says why not.
fn admit(life: &crate::lifecycle::Lifecycle, link: &Arc<Semaphore>, server: &Arc<Semaphore>) -> Result<[OwnedSemaphorePermit; 2], Refusal> {
    if life.stopping() {
        return Err(Refusal::ShuttingDown);
    }
    let link = link.clone().try_acquire_owned().map_err(|_| Refusal::LinkBusy)?;
    let server = server.clone().try_acquire_owned().map_err(|_| Refusal::ServerBusy)?;
    Ok([link, server])
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

    /// An error answer in this dialect.
    fn error(self, err: &ApiError) -> Vec<u8> {
        match self {
            Dialect::Protobuf => error_response(err),
            Dialect::Json => json_error(err),
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
    let route = crate::api::group_route(&s.registry, &dest)?;
    let endpoint = endpoint.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "unknown path"))?;
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
    let mut reply = run_op(&s.supervisor, &route, caller.clone(), op).await.map_err(|err| crate::api::actor_unavailable(err, route.group_id))?;
    // Callers see the costs asked for now, with the adaptive raise.
    if let Ok(crate::group::Reply::Info(v)) = &mut reply {
        v.join_stamp_cost = s.stamps.cost(route.group_id, v.join_stamp_cost);
        v.post_stamp_cost = s.stamps.cost(route.group_id, v.post_stamp_cost);
    }
    match reply {
        Ok(r) => match dialect {
            Dialect::Protobuf => Ok(ok_response(encode_reply(r))),
            Dialect::Json => encode_json_reply(endpoint, r),
        },
        Err(GroupError::StampRequired { cost }) => {
            Err(stamp_required(&route, &caller, s.stamps.cost(route.group_id, cost), "this group requires a join stamp"))
        }
        Err(other) => Err(other.into()),
    }
}

fn stamp_required(route: &Route, caller: &Caller, cost: u32, message: &str) -> ApiError {
    let identity = match caller {
        Caller::Identity(h) => hex::decode(h).unwrap_or_default(),
        _ => Vec::new(),
    };
    let challenge = route.challenge.issue(&route.group_dest, &identity, (crate::store::now_ms() / 1000) as u64, rand::random());
    ApiError { stamp_cost: cost, challenge, ..ApiError::new(ErrorCode::StampRequired, message) }
}

/// Checks a join stamp: the challenge must be ours (cheap, first), the work valid (on the pool,
/// which also limits failures per identity and spends a challenge that failed). Returns whether it
/// is good enough; a bad one is an error that carries a fresh challenge.
async fn check_join_stamp(s: &Services, route: &Route, caller: &Caller, challenge: &[u8], stamp: Vec<u8>) -> Result<bool, ApiError> {
    let Caller::Identity(h) = caller else { return Ok(false) };
    let Some(identity) = crate::wire::identity::parse_hash(h) else { return Ok(false) };
    let now = (crate::store::now_ms() / 1000) as u64;
    // The group's own cost, read from the actor's memory; the pool applies the adaptive raise.
    let base = match route.addr.send(crate::actors::group::GetInfo { caller: caller.clone() }).await {
        Ok(info) => info?.join_stamp_cost,
        Err(err) => return Err(crate::api::actor_unavailable(err, route.group_id)),
    };
    if base == 0 {
        return Ok(true);
    }
    let cost = s.stamps.cost(route.group_id, base);
    if !route.challenge.verify(challenge, &route.group_dest, &identity, now) {
        crate::metrics::stamp_checked("join", "invalid", Some(route.group_id));
        return Err(stamp_required(route, caller, cost, "the challenge is unknown or expired; stamp the new one"));
    }
    let check = Check {
        purpose: Purpose::Join,
        group: Some(route.group_id),
        identity,
        material: challenge.to_vec(),
        challenge: true,
        rounds: MESSAGE_ROUNDS,
        stamp,
        base_cost: base,
    };
    match s.stamps.check(check).await {
        Ok(true) => Ok(true),
        Ok(false) => Err(stamp_required(route, caller, s.stamps.cost(route.group_id, base), "the stamp does not meet the cost; stamp the new challenge")),
        Err(Refused::ChallengeSpent) => Err(stamp_required(route, caller, cost, "this challenge already failed once; stamp the new one")),
        Err(why) => Err(ApiError::new(ErrorCode::RateLimited, why.to_string())),
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
