//! Every metric meshgroup exports, declared once: names, types, labels and help text.
//!
//! Labels are bounded (path, outcome, reason, method, mode, op, state, channel); a group label
//! appears only with `metrics.per_group = true`, and no metric is ever labelled by member.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Label, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// `metrics.per_group`: whether group-level metrics also carry a `group` label (the group id).
static PER_GROUP: AtomicBool = AtomicBool::new(false);

/// Turns the `group` label on or off (from `metrics.per_group`).
pub fn set_per_group(on: bool) {
    PER_GROUP.store(on, Ordering::Relaxed);
}

/// Bounded labels, plus `group` when the operator asked for it.
fn labels(base: &[(&'static str, &'static str)], group: Option<i64>) -> Vec<Label> {
    let mut out: Vec<Label> = base.iter().map(|(k, v)| Label::new(*k, *v)).collect();
    if let Some(g) = group.filter(|_| PER_GROUP.load(Ordering::Relaxed)) {
        out.push(Label::new("group", g.to_string()));
    }
    out
}

/// The kind of a catalogued metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One entry of the catalogue; `docs/metrics.md` and the dashboards are checked against it.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const GROUPS_HOSTED: &str = "meshgroup_groups_hosted";
pub const MEMBERS: &str = "meshgroup_members";
pub const MESSAGES_STORED: &str = "meshgroup_messages_stored";
pub const DB_QUERY_SECONDS: &str = "meshgroup_db_query_duration_seconds";
pub const DB_ERRORS: &str = "meshgroup_db_errors_total";
pub const UPTIME_SECONDS: &str = "meshgroup_uptime_seconds";
pub const RESIDENT_MEMORY_BYTES: &str = "meshgroup_process_resident_memory_bytes";
pub const LINKS_OPEN: &str = "meshgroup_links_open";
pub const REQUESTS: &str = "meshgroup_requests_total";
pub const REQUEST_SECONDS: &str = "meshgroup_request_duration_seconds";
pub const ANNOUNCES_SENT: &str = "meshgroup_announces_sent_total";
pub const ANNOUNCES_DEFERRED: &str = "meshgroup_announces_deferred_total";
pub const PATH_REQUESTS_DEFERRED: &str = "meshgroup_path_requests_deferred_total";
pub const COPIES_WOKEN: &str = "meshgroup_fanout_copies_woken_total";
pub const WINDOW_WAITS: &str = "meshgroup_fanout_window_waits_total";
pub const TRANSPORT_EVENTS_LOST: &str = "meshgroup_transport_events_lost_total";
pub const GROUP_ACTIONS: &str = "meshgroup_group_actions_total";
pub const STAMPS_CHECKED: &str = "meshgroup_stamps_checked_total";
pub const STAMP_SECONDS: &str = "meshgroup_stamp_validation_duration_seconds";
pub const STAMP_POOL_QUEUE: &str = "meshgroup_stamp_pool_queue_depth";
pub const STAMP_COST_RAISE: &str = "meshgroup_stamp_cost_raise";
pub const LXMF_RECEIVED: &str = "meshgroup_lxmf_received_total";
pub const LXMF_SENT: &str = "meshgroup_lxmf_sent_total";
pub const TICKETS_ISSUED: &str = "meshgroup_tickets_issued_total";
pub const OUTBOX_DEPTH: &str = "meshgroup_outbox_depth";
pub const DELIVERIES: &str = "meshgroup_deliveries_total";
pub const DELIVERY_SECONDS: &str = "meshgroup_delivery_latency_seconds";
pub const FANOUT_PREPARE_SECONDS: &str = "meshgroup_fanout_prepare_duration_seconds";
pub const PACING_WAITS: &str = "meshgroup_pacing_waits_total";
pub const DIGESTS: &str = "meshgroup_digests_total";
pub const SEND_BACKPRESSURE: &str = "meshgroup_send_backpressure_total";
pub const POSTS_REFUSED: &str = "meshgroup_posts_refused_total";
pub const PROPAGATION_SYNCS: &str = "meshgroup_propagation_syncs_total";
pub const GROUPS_CREATED: &str = "meshgroup_groups_created_total";
pub const DIRECTORY_REQUESTS: &str = "meshgroup_directory_requests_total";
pub const GROUPS_PER_FOUNDER: &str = "meshgroup_groups_per_founder";
pub const TASK_RESTARTS: &str = "meshgroup_task_restarts_total";
pub const WORK_REFUSED: &str = "meshgroup_work_refused_total";
pub const RESPONSES_DROPPED: &str = "meshgroup_responses_dropped_total";
pub const JOURNAL_REPLAYED: &str = "meshgroup_journal_replayed_total";
pub const JOURNAL_FAILURES: &str = "meshgroup_journal_failures_total";
pub const JOURNAL_POSTS: &str = "meshgroup_journal_posts";

/// The catalogue. Add a metric here, and only here, before recording it.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef { name: GROUPS_HOSTED, kind: Kind::Gauge, labels: &[], help: "Groups hosted by this server." },
    MetricDef { name: MEMBERS, kind: Kind::Gauge, labels: &[], help: "Members across all hosted groups." },
    MetricDef { name: MESSAGES_STORED, kind: Kind::Gauge, labels: &[], help: "Messages held in group histories." },
    MetricDef { name: DB_QUERY_SECONDS, kind: Kind::Histogram, labels: &["op"], help: "Duration of store operations." },
    MetricDef {
        name: DB_ERRORS,
        kind: Kind::Counter,
        labels: &["op"],
        help: "Store operations that failed, or were refused unsent while the database is unreachable.",
    },
    MetricDef { name: UPTIME_SECONDS, kind: Kind::Gauge, labels: &[], help: "Seconds since the server started." },
    MetricDef { name: RESIDENT_MEMORY_BYTES, kind: Kind::Gauge, labels: &[], help: "Resident memory of the server process." },
    MetricDef { name: LINKS_OPEN, kind: Kind::Gauge, labels: &[], help: "Inbound links currently open to group destinations." },
    MetricDef {
        name: REQUESTS,
        kind: Kind::Counter,
        labels: &["path", "dialect", "outcome"],
        help: "Link API requests by path, dialect (protobuf or json) and outcome (ok or an error code).",
    },
    MetricDef {
        name: REQUEST_SECONDS,
        kind: Kind::Histogram,
        labels: &["path"],
        help: "Time from a request's arrival to its response being handed to the transport.",
    },
    MetricDef { name: ANNOUNCES_SENT, kind: Kind::Counter, labels: &["aspect"], help: "Announces sent." },
    MetricDef { name: ANNOUNCES_DEFERRED, kind: Kind::Counter, labels: &[], help: "Announces that waited for the global announce budget." },
    MetricDef {
        name: PATH_REQUESTS_DEFERRED,
        kind: Kind::Counter,
        labels: &[],
        help: "Path requests held back by the path request budget (asked again on the next try).",
    },
    MetricDef { name: TRANSPORT_EVENTS_LOST, kind: Kind::Counter, labels: &["channel"], help: "Transport events lost because a crate channel lagged." },
    MetricDef {
        name: GROUP_ACTIONS,
        kind: Kind::Counter,
        labels: &["action"],
        help: "Membership and moderation actions (join, leave, kick, ban, unban, delete, approve, reject, ...).",
    },
    MetricDef {
        name: STAMPS_CHECKED,
        kind: Kind::Counter,
        labels: &["purpose", "outcome"],
        help: "Stamp checks by purpose (join, post, create) and outcome: valid, invalid, below_raised_cost (enough for the group's own cost, not \
               for the adaptive raise; not counted as a failure), missing, ticket, or a refusal before any work \
               (cooldown: too many failures from the identity; challenge_spent; busy: pool full; share: the identity's, group's or \
               failed identities' share of the pool in use).",
    },
    MetricDef {
        name: STAMP_COST_RAISE,
        kind: Kind::Gauge,
        labels: &[],
        help: "Bits the adaptive stamp cost adds to a group's own join and post costs now: the highest across groups, or per group with metrics.per_group.",
    },
    MetricDef { name: STAMP_SECONDS, kind: Kind::Histogram, labels: &[], help: "Time to validate one stamp (workblock and hash)." },
    MetricDef { name: STAMP_POOL_QUEUE, kind: Kind::Gauge, labels: &[], help: "Stamp validations waiting for or holding a worker." },
    MetricDef { name: LXMF_RECEIVED, kind: Kind::Counter, labels: &["method", "outcome"], help: "Inbound LXMF messages by method and outcome." },
    MetricDef { name: LXMF_SENT, kind: Kind::Counter, labels: &["method", "outcome"], help: "Outbound LXMF messages by method and outcome." },
    MetricDef { name: TICKETS_ISSUED, kind: Kind::Counter, labels: &[], help: "LXMF tickets handed to members." },
    MetricDef { name: OUTBOX_DEPTH, kind: Kind::Gauge, labels: &["state", "class"], help: "Outbox rows by state and delivery class (post, direct, digest)." },
    MetricDef { name: DELIVERIES, kind: Kind::Counter, labels: &["mode", "method", "outcome"], help: "Fan-out deliveries by mode, method and outcome." },
    MetricDef { name: DELIVERY_SECONDS, kind: Kind::Histogram, labels: &["mode"], help: "Time from a post being stored to its delivery being confirmed." },
    MetricDef { name: FANOUT_PREPARE_SECONDS, kind: Kind::Histogram, labels: &[], help: "Time to build, sign and encrypt one batch of fan-out messages." },
    MetricDef { name: PACING_WAITS, kind: Kind::Counter, labels: &[], help: "Times the fan-out waited for a pacing token." },
    MetricDef {
        name: WINDOW_WAITS,
        kind: Kind::Counter,
        labels: &[],
        help: "Times the fan-out waited for places in the window of unproven copies (fanout.window); one wait frees a batch of places.",
    },
    MetricDef {
        name: COPIES_WOKEN,
        kind: Kind::Counter,
        labels: &[],
        help: "Copies made due at once because their member's path arrived (instead of at their next look).",
    },
    MetricDef {
        name: DIGESTS,
        kind: Kind::Counter,
        labels: &["kind"],
        help: "Digests a group produced, one per interval at most: members (membership changes, to subscribers) or join_requests (to approvers).",
    },
    MetricDef {
        name: POSTS_REFUSED,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Posts refused before the rules ran: queue_full (the group's commit queue was full).",
    },
    MetricDef {
        name: SEND_BACKPRESSURE,
        kind: Kind::Counter,
        labels: &[],
        help: "Sends an interface refused for a full queue and that were tried again after a pause.",
    },
    MetricDef {
        name: PROPAGATION_SYNCS,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Syncs of group inboxes on the propagation node by outcome (ok, failed).",
    },
    MetricDef {
        name: GROUPS_CREATED,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Self-service group creations by outcome (created, refused_policy, refused_quota, stamp_missing, stamp_invalid, rate_limited).",
    },
    MetricDef { name: DIRECTORY_REQUESTS, kind: Kind::Counter, labels: &[], help: "Requests for the server's group directory." },
    MetricDef { name: GROUPS_PER_FOUNDER, kind: Kind::Histogram, labels: &[], help: "Groups the founder holds, recorded at each self-service creation." },
    MetricDef {
        name: TASK_RESTARTS,
        kind: Kind::Counter,
        labels: &["task"],
        help: "Background loops (router, delivery, announcer, ...) that ended or panicked before shutdown and were restarted.",
    },
    MetricDef {
        name: WORK_REFUSED,
        kind: Kind::Counter,
        labels: &["kind", "reason"],
        help: "Inbound work refused at a limit: kind request or packet (reason server_busy, link_busy, shutting_down), link (reason links, links_per_interface, links_per_identity; the link is torn down) or transfer (reason transfers, transfers_per_identity, transfers_per_link, transfer_too_large; its link is torn down).",
    },
    MetricDef {
        name: RESPONSES_DROPPED,
        kind: Kind::Counter,
        labels: &["reason"],
        help: "Link API responses that could not be sent: queue_full (after the retries), link_closed, refusal_not_sent.",
    },
    MetricDef {
        name: JOURNAL_REPLAYED,
        kind: Kind::Counter,
        labels: &[],
        help: "Journaled direct posts settled by a replay (stored after a database outage or a crash).",
    },
    MetricDef { name: JOURNAL_FAILURES, kind: Kind::Counter, labels: &[], help: "Direct posts that could not be journaled (journal full or unwritable)." },
    MetricDef { name: JOURNAL_POSTS, kind: Kind::Gauge, labels: &[], help: "Direct posts held in the journal until the group stores them." },
];

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot start the metrics endpoint on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
}

/// Installs the Prometheus exporter on `addr` and describes every catalogued metric.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&buckets)
        .map_err(|e| MetricsError::Listen { addr, message: e.to_string() })?
        // A count of groups, not a duration.
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(GROUPS_PER_FOUNDER.into()), &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0])
        .map_err(|e| MetricsError::Listen { addr, message: e.to_string() })?
        .install()
        .map_err(|e| MetricsError::Listen { addr, message: e.to_string() })?;
    describe_all();
    Ok(())
}

fn describe_all() {
    for m in CATALOGUE {
        let unit = if m.name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if m.name.ends_with("_bytes") {
            Some(Unit::Bytes)
        } else {
            None
        };
        match (m.kind, unit) {
            (Kind::Counter, _) => describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

/// A background loop ended before shutdown and is started again.
pub fn task_restart(task: &'static str) {
    counter!(TASK_RESTARTS, "task" => task).increment(1);
}

/// Inbound work refused at a limit instead of queued without bound.
pub fn work_refused(kind: &'static str, reason: &'static str) {
    counter!(WORK_REFUSED, "kind" => kind, "reason" => reason).increment(1);
}

/// Journaled posts a replay settled.
pub fn journal_replayed(n: usize) {
    if n > 0 {
        counter!(JOURNAL_REPLAYED).increment(n as u64);
    }
}

/// Posts the journal holds now.
pub fn journal_held(n: usize) {
    gauge!(JOURNAL_POSTS).set(n as f64);
}

/// A direct post handled without its journal entry.
pub fn journal_failed() {
    counter!(JOURNAL_FAILURES).increment(1);
}

/// A response that never left: the caller's request times out.
pub fn response_dropped(reason: &'static str) {
    counter!(RESPONSES_DROPPED, "reason" => reason).increment(1);
}

/// Records one store operation.
pub fn db_query(op: &'static str, took: Duration, ok: bool) {
    histogram!(DB_QUERY_SECONDS, "op" => op).record(took.as_secs_f64());
    if !ok {
        counter!(DB_ERRORS, "op" => op).increment(1);
    }
}

/// Records a store call refused unsent while the database is unreachable: an error of its op.
pub fn db_held(op: &'static str) {
    counter!(DB_ERRORS, "op" => op).increment(1);
}

/// Records one link API request.
pub fn request(path: &'static str, dialect: &'static str, outcome: &'static str, took: Duration, group: Option<i64>) {
    counter!(REQUESTS, labels(&[("path", path), ("dialect", dialect), ("outcome", outcome)], group)).increment(1);
    histogram!(REQUEST_SECONDS, labels(&[("path", path)], group)).record(took.as_secs_f64());
}

/// Records a membership or moderation action.
pub fn group_action(action: &'static str, group: i64) {
    counter!(GROUP_ACTIONS, labels(&[("action", action)], Some(group))).increment(1);
}

/// Records a stamp check.
pub fn stamp_checked(purpose: &'static str, outcome: &'static str, group: Option<i64>) {
    counter!(STAMPS_CHECKED, labels(&[("purpose", purpose), ("outcome", outcome)], group)).increment(1);
}

/// The adaptive raise of each group that has one (`0` for a group whose raise just ended).
pub fn stamp_cost_raise(raises: &[(i64, u32)]) {
    if PER_GROUP.load(Ordering::Relaxed) {
        for (g, r) in raises {
            gauge!(STAMP_COST_RAISE, labels(&[], Some(*g))).set(f64::from(*r));
        }
    } else {
        gauge!(STAMP_COST_RAISE).set(f64::from(raises.iter().map(|(_, r)| *r).max().unwrap_or(0)));
    }
}

pub fn stamp_validation(took: Duration) {
    histogram!(STAMP_SECONDS).record(took.as_secs_f64());
}

pub fn stamp_pool_depth(depth: usize) {
    gauge!(STAMP_POOL_QUEUE).set(depth as f64);
}

pub fn announce_sent(aspect: &'static str) {
    counter!(ANNOUNCES_SENT, "aspect" => aspect).increment(1);
}

pub fn announce_deferred() {
    counter!(ANNOUNCES_DEFERRED).increment(1);
}

/// Counts a path request the budget held back (`fanout.path_requests_per_sec`).
pub fn path_request_deferred() {
    counter!(PATH_REQUESTS_DEFERRED).increment(1);
}

pub fn transport_events_lost(channel: &'static str, n: u64) {
    counter!(TRANSPORT_EVENTS_LOST, "channel" => channel).increment(n);
}

/// Records one inbound LXMF message.
pub fn lxmf_received(method: &'static str, outcome: &'static str, group: Option<i64>) {
    counter!(LXMF_RECEIVED, labels(&[("method", method), ("outcome", outcome)], group)).increment(1);
}

/// Mode labels come from stored rows; map them onto the bounded set.
fn mode_label(mode: &str) -> &'static str {
    match mode {
        "short" => "short",
        _ => "full",
    }
}

/// Records one fan-out delivery attempt's outcome.
pub fn delivery(mode: &str, method: &'static str, outcome: &'static str, group: i64) {
    counter!(DELIVERIES, labels(&[("mode", mode_label(mode)), ("method", method), ("outcome", outcome)], Some(group))).increment(1);
}

pub fn delivery_latency(mode: &str, secs: f64, group: i64) {
    histogram!(DELIVERY_SECONDS, labels(&[("mode", mode_label(mode))], Some(group))).record(secs);
}

pub fn fanout_prepare(took: Duration) {
    histogram!(FANOUT_PREPARE_SECONDS).record(took.as_secs_f64());
}

pub fn propagation_sync(outcome: &'static str) {
    counter!(PROPAGATION_SYNCS, "outcome" => outcome).increment(1);
}

pub fn pacing_wait() {
    counter!(PACING_WAITS).increment(1);
}

/// The fan-out waited for places in the window of unproven copies.
pub fn window_wait() {
    counter!(WINDOW_WAITS).increment(1);
}

/// Copies made due at once by their members' paths arriving.
pub fn copies_woken(rows: u64) {
    counter!(COPIES_WOKEN).increment(rows);
}

/// One digest produced by a group (`members` or `join_requests`).
pub fn digest_sent(kind: &'static str) {
    counter!(DIGESTS, "kind" => kind).increment(1);
}

/// One post refused before the rules ran.
pub fn posts_refused(reason: &'static str) {
    counter!(POSTS_REFUSED, "reason" => reason).increment(1);
}

/// One send refused for a full interface queue, to be tried again.
pub fn send_backpressure() {
    counter!(SEND_BACKPRESSURE).increment(1);
}

pub fn ticket_issued() {
    counter!(TICKETS_ISSUED).increment(1);
}

/// Records one outbound LXMF reply (not fan-out).
pub fn lxmf_sent(method: &'static str, outcome: &'static str) {
    counter!(LXMF_SENT, "method" => method, "outcome" => outcome).increment(1);
}

pub fn links_open(n: usize) {
    gauge!(LINKS_OPEN).set(n as f64);
}

/// Gauges sampled on a timer rather than on every event.
pub fn sample_totals(groups: u64, members: u64, messages: u64, outbox: &[(String, crate::domain::DeliveryClass, i64)], started: std::time::Instant) {
    gauge!(GROUPS_HOSTED).set(groups as f64);
    gauge!(MEMBERS).set(members as f64);
    gauge!(MESSAGES_STORED).set(messages as f64);
    for state in ["pending", "sent", "delivered", "propagated", "expired"] {
        for class in crate::domain::DeliveryClass::ALL {
            let n: i64 = outbox.iter().filter(|(s, c, _)| s == state && *c == class).map(|(_, _, n)| *n).sum();
            gauge!(OUTBOX_DEPTH, "state" => state, "class" => class.label()).set(n as f64);
        }
    }
    gauge!(UPTIME_SECONDS).set(started.elapsed().as_secs_f64());
    if let Some(rss) = resident_memory_bytes() {
        gauge!(RESIDENT_MEMORY_BYTES).set(rss as f64);
    }
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Records one self-service creation attempt's outcome.
pub fn group_created(outcome: &'static str) {
    counter!(GROUPS_CREATED, "outcome" => outcome).increment(1);
}

pub fn directory_request() {
    counter!(DIRECTORY_REQUESTS).increment(1);
}

/// The founder's group count, right after a creation.
pub fn groups_per_founder(n: u64) {
    histogram!(GROUPS_PER_FOUNDER).record(n as f64);
}
