//! The `meshchat.group` link API: path table, request decoding into [`Op`], reply encoding, errors.
//!
//! Decoding and encoding are pure functions; the transport router calls [`handle`] with the group
//! actor, and the response bytes go back on the link (as a Resource when large).

pub mod admission;
pub mod hosting;
pub mod lxmf;
pub mod router;
pub mod services;

use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::domain::{NotifyMode, Rights, Visibility};
use crate::group::{Caller, GroupError, InfoView, JoinOutcome, MessageRef, Op, Reply, Settings};
use crate::store::{HistoryQuery, InsertOutcome, NewMessage, Order};
use crate::wire::identity::truncated_hash;
use crate::wire::proto as pb;

/// Version of the API described by `proto/meshgroup.proto`.
pub use crate::wire::announce::API_VERSION;

/// The size guard every request body passes before it is decoded, on every destination.
pub fn within_limit(body: &[u8], max: usize) -> Result<(), ApiError> {
    if body.len() > max {
        return Err(ApiError::invalid(format!("request of {} bytes is over the limit of {max}", body.len())));
    }
    Ok(())
}

/// The route of a group's `meshchat.group` destination, or NOT_FOUND.
pub fn group_route(registry: &crate::actors::supervisor::Registry, dest: &[u8; 16]) -> Result<crate::actors::supervisor::Route, ApiError> {
    crate::actors::supervisor::lookup(registry, dest)
        .filter(|r| r.kind == crate::actors::supervisor::DestKind::Api)
        .ok_or_else(|| ApiError::new(pb::ErrorCode::NotFound, "no such group on this server"))
}

/// A group actor that took no message: the cause goes to the log, the caller hears INTERNAL
/// (nothing was changed, so a retry is safe).
pub fn actor_unavailable(err: actix::MailboxError, group: i64) -> ApiError {
    tracing::error!(%err, group, "group actor unavailable");
    ApiError { cause: Some(std::sync::Arc::new(err)), ..ApiError::new(pb::ErrorCode::Internal, "group temporarily unavailable") }
}

/// What every user is told before posting (the design note asks for it).
pub const PRIVACY_NOTICE: &str = "Any message you send to this group can be seen, saved and shared by its members. \
Messages are encrypted to the group server, which can read them. The group administrator stores and controls \
all data of this group and may remove messages or members at any time.";

/// Every path of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Info,
    Join,
    Leave,
    Members,
    JoinRequests,
    Approve,
    Reject,
    Messages,
    Send,
    Delete,
    React,
    Attachment,
    Kick,
    Ban,
    Unban,
    Bans,
    Permissions,
    DisplayName,
    Settings,
    Notifications,
    DeleteGroup,
    TransferFounder,
}

impl Endpoint {
    pub const ALL: &'static [(Endpoint, &'static str)] = &[
        (Endpoint::Info, "/api/v1/info"),
        (Endpoint::Join, "/api/v1/join"),
        (Endpoint::Leave, "/api/v1/leave"),
        (Endpoint::Members, "/api/v1/members"),
        (Endpoint::JoinRequests, "/api/v1/join-requests"),
        (Endpoint::Approve, "/api/v1/join-requests/approve"),
        (Endpoint::Reject, "/api/v1/join-requests/reject"),
        (Endpoint::Messages, "/api/v1/messages"),
        (Endpoint::Send, "/api/v1/messages/send"),
        (Endpoint::Delete, "/api/v1/messages/delete"),
        (Endpoint::Kick, "/api/v1/members/kick"),
        (Endpoint::Ban, "/api/v1/members/ban"),
        (Endpoint::Unban, "/api/v1/members/unban"),
        (Endpoint::Bans, "/api/v1/bans"),
        (Endpoint::Permissions, "/api/v1/members/permissions"),
        (Endpoint::DisplayName, "/api/v1/display-name/update"),
        (Endpoint::Settings, "/api/v1/settings/update"),
        (Endpoint::Notifications, "/api/v1/notifications/update"),
        (Endpoint::DeleteGroup, "/api/v1/groups/delete"),
        (Endpoint::TransferFounder, "/api/v1/groups/transfer"),
        // Last, so the fuzz corpus's path selectors keep naming the paths they were made for.
        (Endpoint::React, "/api/v1/messages/react"),
        (Endpoint::Attachment, "/api/v1/messages/attachment"),
    ];

    /// The path string, also the metrics label.
    pub fn path(self) -> &'static str {
        Self::ALL.iter().find(|(e, _)| *e == self).map(|(_, p)| *p).unwrap_or("unknown")
    }

    /// RNS requests carry `TH(path)`, not the path.
    pub fn from_path_hash(hash: &[u8]) -> Option<Endpoint> {
        lookup_path(Self::ALL, hash).map(|(e, _)| e)
    }
}

/// The entry of a path table whose path hashes to `hash` (an RNS request's `TH(path)`).
pub fn lookup_path<T: Copy>(table: &'static [(T, &'static str)], hash: &[u8]) -> Option<(T, &'static str)> {
    table.iter().find(|(_, p)| truncated_hash(p.as_bytes()) == hash).copied()
}

/// An API failure: the code, message, cost and challenge go on the wire; the cause, when there is
/// one (a store failure), only to the log.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: pb::ErrorCode,
    pub message: String,
    pub stamp_cost: u32,
    pub challenge: Vec<u8>,
    pub cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are the same to the caller when what goes on the wire is.
impl PartialEq for ApiError {
    fn eq(&self, other: &Self) -> bool {
        (self.code, &self.message, self.stamp_cost, &self.challenge) == (other.code, &other.message, other.stamp_cost, &other.challenge)
    }
}

impl ApiError {
    pub fn new(code: pb::ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), stamp_cost: 0, challenge: Vec::new(), cause: None }
    }

    /// The cause for the log line, empty when there is none.
    pub fn cause_text(&self) -> String {
        self.cause.as_ref().map(|c| c.to_string()).unwrap_or_default()
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(pb::ErrorCode::InvalidArgument, message)
    }

    /// The metrics label of the outcome.
    pub fn label(&self) -> &'static str {
        match self.code {
            pb::ErrorCode::Unauthenticated => "unauthenticated",
            pb::ErrorCode::Forbidden => "forbidden",
            pb::ErrorCode::NotFound => "not_found",
            pb::ErrorCode::InvalidArgument => "invalid_argument",
            pb::ErrorCode::StampRequired => "stamp_required",
            pb::ErrorCode::RateLimited => "rate_limited",
            pb::ErrorCode::Internal | pb::ErrorCode::Unspecified => "internal",
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        use pb::ErrorCode as C;
        match e {
            GroupError::Unauthenticated => ApiError::new(C::Unauthenticated, e.to_string()),
            GroupError::Forbidden(_) => ApiError::new(C::Forbidden, e.to_string()),
            GroupError::NotFound(_) => ApiError::new(C::NotFound, e.to_string()),
            GroupError::InvalidArgument(_) => ApiError::new(C::InvalidArgument, e.to_string()),
            GroupError::StampRequired { cost } => ApiError { stamp_cost: cost, ..ApiError::new(C::StampRequired, e.to_string()) },
            GroupError::RateLimited => ApiError::new(C::RateLimited, e.to_string()),
            // Storage details stay in the server log.
            GroupError::Store(cause) => {
                let said = if cause.is_unreachable() {
                    "the database is unreachable, nothing was changed; try again later"
                } else {
                    "internal error, nothing was changed"
                };
                ApiError { cause: Some(cause), ..ApiError::new(C::Internal, said) }
            }
        }
    }
}

/// Encodes a success envelope.
pub fn ok_response(payload: Vec<u8>) -> Vec<u8> {
    pb::Response { error: None, payload }.encode_to_vec()
}

/// Encodes a failure envelope.
pub fn error_response(err: &ApiError) -> Vec<u8> {
    pb::Response {
        error: Some(pb::Error { code: err.code as i32, message: err.message.clone(), stamp_cost: err.stamp_cost, challenge: err.challenge.clone() }),
        payload: Vec::new(),
    }
    .encode_to_vec()
}

/// What the decoder needs to know about the group and the request.
#[derive(Clone, Debug)]
pub struct DecodeContext<'a> {
    pub group_id: i64,
    pub group_lxmf_hash: &'a [u8],
    pub caller: &'a Caller,
    pub default_page: u32,
    pub max_page: u32,
    /// Seconds since the epoch, for posts without a client timestamp.
    pub now_s: f64,
}

/// A decoded request: the operation, and for joins the stamp material to check off the actor.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub op: Op,
    pub join_stamp: Option<(Vec<u8>, Vec<u8>)>,
}

pub(crate) fn hash16(bytes: &[u8], what: &str) -> Result<String, ApiError> {
    if bytes.len() != 16 {
        return Err(ApiError::invalid(format!("{what} must be a 16-byte identity hash")));
    }
    Ok(hex::encode(bytes))
}

pub(crate) fn decode<M: prost::Message + Default>(body: &[u8]) -> Result<M, ApiError> {
    M::decode(body).map_err(|e| ApiError::invalid(format!("malformed request body: {e}")))
}

/// A page size: 0 (or absent) is the default page, and no page is larger than the limit.
fn page(limit: u64, ctx: &DecodeContext<'_>) -> u64 {
    if limit == 0 { u64::from(ctx.default_page) } else { limit.min(u64::from(ctx.max_page)) }
}

/// A join, in either dialect; the stamp, if any, is checked off the actor before the join runs.
fn join(display_name: String, note: String, challenge: Vec<u8>, stamp: Vec<u8>) -> Result<Decoded, ApiError> {
    if stamp.len() > crate::wire::stamp::STAMP_MAX_LEN {
        return Err(ApiError::invalid("stamp longer than 32 bytes"));
    }
    let join_stamp = (!stamp.is_empty() || !challenge.is_empty()).then_some((challenge, stamp));
    Ok(Decoded { op: Op::Join { display_name, note, stamp_verified: false }, join_stamp })
}

/// A post over the link, in either dialect: identified callers only, never empty, and a hash that
/// is stable across retries (the nonce, or the client's timestamp and the content).
fn post(ctx: &DecodeContext<'_>, nonce: Vec<u8>, timestamp_s: f64, title: Vec<u8>, content: Vec<u8>, fields: Vec<u8>) -> Result<Decoded, ApiError> {
    let Caller::Identity(sender) = ctx.caller else {
        return Err(ApiError::new(pb::ErrorCode::Unauthenticated, "identify on the link first"));
    };
    if content.is_empty() && fields.is_empty() {
        return Err(ApiError::invalid("an empty message"));
    }
    if !nonce.is_empty() && !(16..=32).contains(&nonce.len()) {
        return Err(ApiError::invalid("nonce must be 16 to 32 bytes"));
    }
    let fields = if fields.is_empty() { vec![0x80] } else { fields };
    if crate::wire::lxmf::decode_fields(&fields).is_err() {
        return Err(ApiError::invalid("fields must be a msgpack map"));
    }
    let timestamp = if timestamp_s.is_finite() && timestamp_s > 0.0 { timestamp_s } else { ctx.now_s };
    let message_hash = link_post_hash(ctx.group_lxmf_hash, sender, &nonce, &content, timestamp);
    Ok(Decoded {
        op: Op::Post(NewMessage {
            group_id: ctx.group_id,
            message_hash,
            sender_identity_hash: sender.clone(),
            sender_display_name: String::new(),
            timestamp,
            title,
            content,
            fields,
            reply_to_id: None,
        }),
        join_stamp: None,
    })
}

fn stamp_cost(c: Option<u32>) -> Result<Option<u32>, ApiError> {
    match c {
        Some(c) if c > 254 => Err(ApiError::invalid(format!("stamp cost {c} outside 0-254"))),
        other => Ok(other),
    }
}

fn visibility(v: i32) -> Result<Visibility, ApiError> {
    match pb::Visibility::try_from(v) {
        Ok(pb::Visibility::Public) => Ok(Visibility::Public),
        Ok(pb::Visibility::Private) => Ok(Visibility::Private),
        Err(_) => Err(ApiError::invalid(format!("unknown visibility {v}"))),
    }
}

fn notify_mode(v: i32) -> Result<NotifyMode, ApiError> {
    match pb::NotifyMode::try_from(v) {
        Ok(pb::NotifyMode::NotifyFull) => Ok(NotifyMode::Full),
        Ok(pb::NotifyMode::NotifyShort) => Ok(NotifyMode::Short),
        Ok(pb::NotifyMode::NotifyNone) => Ok(NotifyMode::None),
        Err(_) => Err(ApiError::invalid(format!("unknown notification mode {v}"))),
    }
}

/// The stored hash of a post made over the link: stable across retries that reuse the nonce.
pub fn link_post_hash(group_lxmf_hash: &[u8], sender: &str, nonce: &[u8], content: &[u8], timestamp: f64) -> String {
    let mut h = Sha256::new();
    h.update(b"meshgroup link post v1");
    h.update(group_lxmf_hash);
    h.update(sender.as_bytes());
    if nonce.is_empty() {
        h.update(timestamp.to_be_bytes());
        h.update(content);
    } else {
        h.update(nonce);
    }
    hex::encode(h.finalize())
}

/// Decodes a request body into an operation. Pure: no I/O, no panics on any input.
pub fn decode_request(ep: Endpoint, body: &[u8], ctx: &DecodeContext<'_>) -> Result<Decoded, ApiError> {
    let plain = |op| Ok(Decoded { op, join_stamp: None });
    match ep {
        Endpoint::Info => decode::<pb::InfoRequest>(body).and_then(|_| plain(Op::Info)),
        Endpoint::Join => {
            let r: pb::JoinRequest = decode(body)?;
            join(r.display_name, r.note, r.challenge, r.stamp)
        }
        Endpoint::Leave => decode::<pb::LeaveRequest>(body).and_then(|_| plain(Op::Leave)),
        Endpoint::Members => {
            let r: pb::MembersRequest = decode(body)?;
            plain(Op::Members { offset: u64::from(r.offset), limit: page(r.limit.into(), ctx) })
        }
        Endpoint::JoinRequests => decode::<pb::JoinRequestsRequest>(body).and_then(|_| plain(Op::JoinRequests)),
        Endpoint::Approve | Endpoint::Reject => {
            let r: pb::DecideJoinRequest = decode(body)?;
            let identity = hash16(&r.identity_hash, "identity_hash")?;
            plain(if ep == Endpoint::Approve { Op::Approve { identity } } else { Op::Reject { identity } })
        }
        Endpoint::Messages => {
            let r: pb::MessagesRequest = decode(body)?;
            if r.before_id < 0 || r.after_id < 0 {
                return Err(ApiError::invalid("message ids are positive"));
            }
            let order = match pb::Order::try_from(r.order) {
                Ok(pb::Order::NewestFirst) => Order::NewestFirst,
                Ok(pb::Order::OldestFirst) => Order::OldestFirst,
                Err(_) => return Err(ApiError::invalid(format!("unknown order {}", r.order))),
            };
            plain(Op::History(HistoryQuery {
                limit: page(r.limit.into(), ctx),
                before_id: (r.before_id > 0).then_some(r.before_id),
                after_id: (r.after_id > 0).then_some(r.after_id),
                order,
                events_after: r.include_events.then_some(r.events_after_id.max(0)),
            }))
        }
        Endpoint::Send => {
            let r: pb::SendMessageRequest = decode(body)?;
            post(ctx, r.nonce, r.timestamp_s, r.title, r.content, r.fields)
        }
        Endpoint::Delete => {
            let r: pb::DeleteMessageRequest = decode(body)?;
            plain(Op::DeleteMessage { id: r.id })
        }
        Endpoint::React => {
            let r: pb::ReactRequest = decode(body)?;
            plain(Op::React { target: MessageRef::Id(r.id), emoji: r.emoji, remove: r.remove })
        }
        Endpoint::Attachment => {
            let r: pb::AttachmentRequest = decode(body)?;
            plain(Op::Attachments { id: r.id })
        }
        Endpoint::Kick => {
            let r: pb::KickRequest = decode(body)?;
            plain(Op::Kick { identity: hash16(&r.identity_hash, "identity_hash")? })
        }
        Endpoint::Ban => {
            let r: pb::BanRequest = decode(body)?;
            plain(Op::Ban { identity: hash16(&r.identity_hash, "identity_hash")?, reason: r.reason })
        }
        Endpoint::Unban => {
            let r: pb::UnbanRequest = decode(body)?;
            plain(Op::Unban { identity: hash16(&r.identity_hash, "identity_hash")? })
        }
        Endpoint::Bans => decode::<pb::BansRequest>(body).and_then(|_| plain(Op::Bans)),
        Endpoint::Permissions => {
            let r: pb::PermissionsRequest = decode(body)?;
            if i64::from(r.rights) & !Rights::ALL.0 != 0 {
                return Err(ApiError::invalid("unknown rights bits"));
            }
            plain(Op::SetPermissions { identity: hash16(&r.identity_hash, "identity_hash")?, rights: Rights(r.rights.into()) })
        }
        Endpoint::DisplayName => {
            let r: pb::DisplayNameUpdate = decode(body)?;
            if r.public_name.is_none() && r.private_name.is_none() {
                return Err(ApiError::invalid("nothing to update"));
            }
            plain(Op::Rename { public_name: r.public_name, private_name: r.private_name })
        }
        Endpoint::Settings => {
            let r: pb::SettingsUpdate = decode(body)?;
            plain(Op::UpdateSettings(Settings {
                visibility: r.visibility.map(visibility).transpose()?,
                join_stamp_cost: stamp_cost(r.join_stamp_cost)?,
                post_stamp_cost: stamp_cost(r.post_stamp_cost)?,
                history_public: r.history_public,
                listed: r.listed,
                attachment_max_bytes: r.attachment_max_bytes,
                attachment_kinds: r.attachment_kinds,
            }))
        }
        Endpoint::Notifications => {
            let r: pb::NotificationsUpdate = decode(body)?;
            // The empty message (mode left out, no digest choice) means NOTIFY_FULL, as before.
            let mode = match (r.mode, r.digest) {
                (None, Some(_)) => None,
                (mode, _) => Some(notify_mode(mode.unwrap_or_default())?),
            };
            plain(Op::SetNotifications { mode, digest: r.digest, text_only: r.text_only })
        }
        // On the group's own destination the group is implied; a named one is ignored.
        Endpoint::DeleteGroup => decode::<pb::DeleteGroupRequest>(body).and_then(|_| plain(Op::DeleteGroup)),
        Endpoint::TransferFounder => {
            let r: pb::TransferFounderRequest = decode(body)?;
            plain(Op::TransferFounder { identity: hash16(&r.identity_hash, "identity_hash")? })
        }
    }
}

/// Decodes a request in the JSON dialect of MeshChat's prototype (see [`crate::wire::meshchat_json`])
/// into the same operation its protobuf twin becomes, so both dialects run one code path after
/// this. `body` is `None` for a nil data element. Pure, like [`decode_request`].
pub fn decode_json_request(ep: Endpoint, body: Option<&[u8]>, ctx: &DecodeContext<'_>) -> Result<Decoded, ApiError> {
    use crate::wire::meshchat_json::{JsonOrder, JsonRequest, decode_request};
    let plain = |op| Ok(Decoded { op, join_stamp: None });
    let page_size = |limit: Option<u64>| page(limit.unwrap_or(0), ctx);
    match decode_request(ep.path(), body).map_err(|e| ApiError::invalid(e.to_string()))? {
        JsonRequest::Info => plain(Op::Info),
        JsonRequest::Leave => plain(Op::Leave),
        JsonRequest::Join { display_name, challenge, stamp } => join(display_name, String::new(), challenge, stamp),
        JsonRequest::Members { page: number, limit } => {
            let limit = page_size(limit);
            // The prototype's pages count from 1, and page 0 is page 1 (peewee's `paginate`).
            plain(Op::Members { offset: number.unwrap_or(1).max(1).saturating_sub(1).saturating_mul(limit), limit })
        }
        JsonRequest::Messages { order, limit, after_id } => {
            // `asc` pages forward from `after_id` (from the oldest without it); `desc` pages back
            // from it (from the newest without it), as the prototype's queries do.
            let (before_id, after_id, order) = match order {
                JsonOrder::Asc => (None, Some(after_id.unwrap_or(0)), Order::OldestFirst),
                JsonOrder::Desc => (after_id, None, Order::NewestFirst),
            };
            plain(Op::History(HistoryQuery { limit: page_size(limit), before_id, after_id, order, events_after: None }))
        }
        JsonRequest::Send { timestamp, content } => post(ctx, Vec::new(), timestamp.unwrap_or(0.0), Vec::new(), content.into_bytes(), Vec::new()),
    }
}

/// Encodes a reply in the JSON dialect: the prototype's answer object for each of its paths.
/// A join of someone who is a member already is an error there, so it is one here too.
pub fn encode_json_reply(ep: Endpoint, reply: Reply) -> Result<Vec<u8>, ApiError> {
    use crate::wire::meshchat_json::{self as mj, InfoBody, MemberEntry, MessageEntry};
    use serde_json::{Value, json};
    Ok(match reply {
        Reply::Info(v) => mj::encode(&InfoBody { group_type: v.visibility.as_str(), public_display_name: &v.name, members_count: v.member_count }),
        Reply::Joined(JoinOutcome::Joined) => mj::success("You are now a member of this group", &[("state", Value::from("joined"))]),
        Reply::Joined(JoinOutcome::Requested) => {
            mj::success("Your request to join was sent; an admin of the group will decide", &[("state", Value::from("requested"))])
        }
        Reply::Joined(JoinOutcome::AlreadyMember) => return Err(ApiError::invalid("You are already a member of this group")),
        Reply::Done if ep == Endpoint::Leave => mj::success("You are no longer a member of this group", &[]),
        Reply::Members { members, .. } => {
            let members: Vec<MemberEntry> = members.into_iter().map(|m| MemberEntry { identity_hash: m.identity_hash, display_name: m.display_name }).collect();
            mj::encode(&json!({ "members": members }))
        }
        Reply::History { messages, mut reactions, .. } => {
            let messages: Vec<MessageEntry> = messages
                .into_iter()
                .map(|(m, display_name)| MessageEntry {
                    id: m.id,
                    member_identity_hash: m.sender_identity_hash,
                    display_name,
                    content: String::from_utf8_lossy(&m.content).into_owned(),
                    created_at: mj::created_at(m.received_at),
                    deleted: m.deleted_at.is_some(),
                    reply_to: m.reply_to_id,
                    reactions: reactions.remove(&m.id).unwrap_or_default().into_iter().collect(),
                })
                .collect();
            mj::encode(&json!({ "messages": messages }))
        }
        Reply::Posted(out) => {
            mj::success("Message received", &[("id", Value::from(out.id())), ("duplicate", Value::from(matches!(out, InsertOutcome::Duplicate(_))))])
        }
        // The JSON decoder yields no other operation.
        other => {
            tracing::error!(path = ep.path(), ?other, "no JSON form for this reply");
            return Err(ApiError::new(pb::ErrorCode::Internal, "internal error"));
        }
    })
}

/// Encodes a failure in the JSON dialect: `{"error", "code"}`, and for a join that needs a stamp
/// the cost and the challenge, named in the message too, so a client can stamp and retry.
pub fn json_error(err: &ApiError) -> Vec<u8> {
    if err.code == pb::ErrorCode::StampRequired {
        let message = format!(
            "{}: stamp cost {}, challenge {}; send the request again with \"challenge\" and \"stamp\" (hex)",
            err.message,
            err.stamp_cost,
            hex::encode(&err.challenge)
        );
        return crate::wire::meshchat_json::error(&message, err.label(), Some((err.stamp_cost, &err.challenge)));
    }
    crate::wire::meshchat_json::error(&err.message, err.label(), None)
}

fn hash_bytes(hex_hash: &str) -> Vec<u8> {
    hex::decode(hex_hash).unwrap_or_default()
}

pub fn info_message(v: &InfoView) -> pb::InfoResponse {
    pb::InfoResponse {
        name: v.name.clone(),
        visibility: match v.visibility {
            Visibility::Public => pb::Visibility::Public,
            Visibility::Private => pb::Visibility::Private,
        } as i32,
        member_count: v.member_count.min(u64::from(u32::MAX)) as u32,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        api_version: API_VERSION,
        join_stamp_cost: v.join_stamp_cost,
        post_stamp_cost: v.post_stamp_cost,
        privacy_notice: PRIVACY_NOTICE.to_owned(),
        is_member: v.is_member,
        rights: v.rights.0 as u32,
        history_public: v.history_public,
        lxmf_destination: hash_bytes(&v.lxmf_dest_hash),
        notify_mode: match v.notify_mode {
            Some(NotifyMode::Short) => pb::NotifyMode::NotifyShort,
            Some(NotifyMode::None) => pb::NotifyMode::NotifyNone,
            _ => pb::NotifyMode::NotifyFull,
        } as i32,
        digest: v.digest,
    }
}

/// Encodes a successful reply as the path's response message.
pub fn encode_reply(reply: Reply) -> Vec<u8> {
    match reply {
        Reply::Done => pb::Ack {}.encode_to_vec(),
        Reply::Info(v) => info_message(&v).encode_to_vec(),
        Reply::Joined(j) => pb::JoinResponse {
            state: match j {
                JoinOutcome::Joined => pb::JoinState::Joined,
                JoinOutcome::AlreadyMember => pb::JoinState::AlreadyMember,
                JoinOutcome::Requested => pb::JoinState::Requested,
            } as i32,
        }
        .encode_to_vec(),
        Reply::Members { members, total } => pb::MembersResponse {
            members: members
                .into_iter()
                .map(|m| pb::Member {
                    identity_hash: hash_bytes(&m.identity_hash),
                    display_name: m.display_name,
                    rights: m.permissions as u32,
                    joined_at: m.created_at,
                })
                .collect(),
            total: total.min(u64::from(u32::MAX)) as u32,
        }
        .encode_to_vec(),
        Reply::JoinRequests(reqs) => pb::JoinRequestsResponse {
            requests: reqs
                .into_iter()
                .map(|r| pb::PendingJoin {
                    identity_hash: hash_bytes(&r.identity_hash),
                    display_name: r.display_name,
                    note: r.note,
                    requested_at: r.created_at,
                })
                .collect(),
        }
        .encode_to_vec(),
        Reply::History { messages, events, mut reactions, more, more_events } => pb::MessagesResponse {
            more,
            more_events,
            events: events
                .into_iter()
                .map(|e| pb::GroupEvent { id: e.id, kind: e.kind, actor: e.actor, subject: e.subject, detail: e.detail, created_at: e.created_at })
                .collect(),
            messages: messages
                .into_iter()
                .map(|(m, name)| pb::GroupMessage {
                    id: m.id,
                    message_hash: hash_bytes(&m.message_hash),
                    sender_identity_hash: hash_bytes(&m.sender_identity_hash),
                    sender_display_name: name,
                    timestamp_s: m.timestamp,
                    title: m.title,
                    content: m.content,
                    fields: m.fields,
                    deleted: m.deleted_at.is_some(),
                    deleted_by: m.deleted_by.as_deref().map(hash_bytes).unwrap_or_default(),
                    deleted_at: m.deleted_at.unwrap_or(0),
                    reply_to_id: m.reply_to_id.unwrap_or(0),
                    reactions: reactions
                        .remove(&m.id)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(emoji, count)| pb::ReactionCount { emoji, count: count.min(u64::from(u32::MAX)) as u32 })
                        .collect(),
                })
                .collect(),
        }
        .encode_to_vec(),
        Reply::Posted(out) => {
            let (id, duplicate) = match out {
                InsertOutcome::Inserted(id) => (id, false),
                InsertOutcome::Duplicate(id) => (id, true),
            };
            pb::SendMessageResponse { id, message_hash: Vec::new(), duplicate }.encode_to_vec()
        }
        Reply::Attachments(found) => {
            pb::AttachmentsResponse { attachments: found.into_iter().map(|a| pb::Attachment { field: a.field as u32, name: a.name, data: a.data }).collect() }
                .encode_to_vec()
        }
        Reply::Bans(bans) => pb::BansResponse {
            bans: bans
                .into_iter()
                .map(|b| pb::BanEntry { identity_hash: hash_bytes(&b.identity_hash), reason: b.reason, banned_by: b.banned_by, banned_at: b.created_at })
                .collect(),
        }
        .encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(caller: &Caller) -> DecodeContext<'_> {
        DecodeContext { group_id: 1, group_lxmf_hash: &[1; 16], caller, default_page: 20, max_page: 200, now_s: 1.0 }
    }

    #[test]
    fn every_path_hash_resolves() {
        for (ep, path) in Endpoint::ALL {
            assert_eq!(Endpoint::from_path_hash(&truncated_hash(path.as_bytes())), Some(*ep));
            assert_eq!(ep.path(), *path);
        }
        assert_eq!(Endpoint::from_path_hash(&[0; 16]), None);
    }

    #[test]
    fn garbage_bodies_are_invalid_argument_never_panics() {
        let caller = Caller::Identity("aa".repeat(16));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300usize {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            for (ep, _) in Endpoint::ALL {
                if let Err(e) = decode_request(*ep, &body, &ctx(&caller)) {
                    assert_eq!(e.code, pb::ErrorCode::InvalidArgument, "{ep:?}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn decode_examples() {
        let caller = Caller::Identity("aa".repeat(16));
        let body = pb::MessagesRequest { limit: 5000, before_id: 10, after_id: 0, order: 1, ..Default::default() }.encode_to_vec();
        match decode_request(Endpoint::Messages, &body, &ctx(&caller)).map(|d| d.op) {
            Ok(Op::History(q)) => assert_eq!((q.limit, q.before_id, q.order), (200, Some(10), Order::OldestFirst)),
            other => panic!("{other:?}"),
        }
        let kick = pb::KickRequest { identity_hash: vec![1; 15] }.encode_to_vec();
        assert_eq!(decode_request(Endpoint::Kick, &kick, &ctx(&caller)).map(|_| ()).unwrap_err().code, pb::ErrorCode::InvalidArgument);
        let send = pb::SendMessageRequest { content: b"hi".to_vec(), ..Default::default() }.encode_to_vec();
        assert_eq!(decode_request(Endpoint::Send, &send, &ctx(&Caller::Anonymous)).map(|_| ()).unwrap_err().code, pb::ErrorCode::Unauthenticated);
        let settings = pb::SettingsUpdate { post_stamp_cost: Some(300), ..Default::default() }.encode_to_vec();
        assert!(decode_request(Endpoint::Settings, &settings, &ctx(&caller)).is_err());
    }

    #[test]
    fn json_requests_become_the_same_operations() {
        let caller = Caller::Identity("aa".repeat(16));
        let op = |ep, body: Option<&str>, caller: &Caller| decode_json_request(ep, body.map(str::as_bytes), &ctx(caller)).map(|d| d.op);
        let members = |body| match op(Endpoint::Members, body, &caller) {
            Ok(Op::Members { offset, limit }) => (offset, limit),
            other => panic!("{other:?}"),
        };
        assert_eq!(members(Some(r#"{"page": 3, "limit": 10}"#)), (20, 10));
        assert_eq!(members(Some(r#"{"page": 0, "limit": 10}"#)), (0, 10), "page 0 is page 1");
        assert_eq!(members(None), (0, 20), "the default page");
        let history = |body| match op(Endpoint::Messages, Some(body), &caller) {
            Ok(Op::History(q)) => (q.before_id, q.after_id, q.order, q.limit),
            other => panic!("{other:?}"),
        };
        assert_eq!(history(r#"{"order": "asc", "limit": 2, "after_id": null}"#), (None, Some(0), Order::OldestFirst, 2), "asc starts at the oldest");
        assert_eq!(history(r#"{"order": "asc", "limit": 2, "after_id": 5}"#), (None, Some(5), Order::OldestFirst, 2));
        assert_eq!(history(r#"{"order": "desc", "limit": 5000, "after_id": 9}"#), (Some(9), None, Order::NewestFirst, 200), "desc pages back");
        assert_eq!(history(r#"{"order": "desc", "limit": 1, "after_id": null}"#), (None, None, Order::NewestFirst, 1));
        let send = r#"{"timestamp": 1764637323.25, "content": "hello world!"}"#;
        let hash = |body| match op(Endpoint::Send, Some(body), &caller) {
            Ok(Op::Post(m)) => (m.message_hash, m.content, m.timestamp),
            other => panic!("{other:?}"),
        };
        assert_eq!(hash(send), hash(send), "a retry with the same timestamp is the same post");
        assert_eq!(hash(send).1, b"hello world!".to_vec());
        let code = |ep, body, caller: &Caller| op(ep, body, caller).map(|_| ()).unwrap_err().code;
        assert_eq!(code(Endpoint::Send, Some(send), &Caller::Anonymous), pb::ErrorCode::Unauthenticated);
        assert_eq!(code(Endpoint::Join, Some(r#"{"display_name": 1}"#), &caller), pb::ErrorCode::InvalidArgument);
        assert_eq!(code(Endpoint::Bans, None, &caller), pb::ErrorCode::InvalidArgument, "only the prototype's paths speak JSON");
        match decode_json_request(Endpoint::Join, Some(br#"{"display_name": "x", "challenge": "0102", "stamp": "03"}"#), &ctx(&caller)) {
            Ok(Decoded { op: Op::Join { display_name, .. }, join_stamp }) => {
                assert_eq!((display_name.as_str(), join_stamp), ("x", Some((vec![1, 2], vec![3]))))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_stamp_cost_and_challenge() {
        let err = ApiError { stamp_cost: 8, challenge: vec![0xab; 32], ..ApiError::new(pb::ErrorCode::StampRequired, "this group requires a join stamp") };
        let v: serde_json::Value = serde_json::from_slice(&json_error(&err)).expect("json");
        let message = v["error"].as_str().expect("error");
        assert!(message.contains("stamp cost 8") && message.contains(&"ab".repeat(32)), "{message}");
        assert_eq!((v["code"].as_str(), v["stamp_cost"].as_u64(), v["challenge"].as_str()), (Some("stamp_required"), Some(8), Some("ab".repeat(32).as_str())));
        let v: serde_json::Value = serde_json::from_slice(&json_error(&ApiError::invalid("bad"))).expect("json");
        assert_eq!(v, serde_json::json!({"error": "bad", "code": "invalid_argument"}));
    }

    #[test]
    fn envelope_round_trips() {
        let err = ApiError { stamp_cost: 8, challenge: vec![9; 32], ..ApiError::new(pb::ErrorCode::StampRequired, "x") };
        let r = pb::Response::decode(error_response(&err).as_slice()).expect("decode");
        let e = r.error.expect("error");
        assert_eq!((e.code, e.stamp_cost, e.challenge.len()), (pb::ErrorCode::StampRequired as i32, 8, 32));
        let ok = pb::Response::decode(ok_response(vec![1, 2]).as_slice()).expect("decode");
        assert!(ok.error.is_none() && ok.payload == vec![1, 2]);
    }
}
