//! The `meshchat.group` link API: path table, request decoding into [`Op`], reply encoding, errors.
//!
//! Decoding and encoding are pure functions; the transport router calls [`handle`] with the group
//! actor, and the response bytes go back on the link (as a Resource when large).

use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::domain::{NotifyMode, Rights, Visibility};
use crate::group::{Caller, GroupError, InfoView, JoinOutcome, Op, Reply, Settings};
use crate::store::{HistoryQuery, InsertOutcome, NewMessage, Order};
use crate::wire::identity::truncated_hash;
use crate::wire::proto as pb;

/// Version of the API described by `proto/meshgroup.proto`.
pub const API_VERSION: u32 = 1;

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

/// An API failure as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: pb::ErrorCode,
    pub message: String,
    pub stamp_cost: u32,
    pub challenge: Vec<u8>,
}

impl ApiError {
    pub fn new(code: pb::ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), stamp_cost: 0, challenge: Vec::new() }
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
            GroupError::Store(_) => ApiError::new(C::Internal, "internal error, nothing was changed"),
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

fn page(limit: u32, ctx: &DecodeContext<'_>) -> u64 {
    u64::from(if limit == 0 { ctx.default_page } else { limit.min(ctx.max_page) })
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
            let join_stamp = (!r.stamp.is_empty() || !r.challenge.is_empty()).then(|| (r.challenge.clone(), r.stamp.clone()));
            if r.stamp.len() > crate::wire::stamp::STAMP_MAX_LEN {
                return Err(ApiError::invalid("stamp longer than 32 bytes"));
            }
            Ok(Decoded { op: Op::Join { display_name: r.display_name, note: r.note, stamp_verified: false }, join_stamp })
        }
        Endpoint::Leave => decode::<pb::LeaveRequest>(body).and_then(|_| plain(Op::Leave)),
        Endpoint::Members => {
            let r: pb::MembersRequest = decode(body)?;
            plain(Op::Members { offset: u64::from(r.offset), limit: page(r.limit, ctx) })
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
                limit: page(r.limit, ctx),
                before_id: (r.before_id > 0).then_some(r.before_id),
                after_id: (r.after_id > 0).then_some(r.after_id),
                order,
                events_after: r.include_events.then_some(r.events_after_id.max(0)),
            }))
        }
        Endpoint::Send => {
            let r: pb::SendMessageRequest = decode(body)?;
            let Caller::Identity(sender) = ctx.caller else {
                return Err(ApiError::new(pb::ErrorCode::Unauthenticated, "identify on the link first"));
            };
            if r.content.is_empty() && r.fields.is_empty() {
                return Err(ApiError::invalid("an empty message"));
            }
            if !r.nonce.is_empty() && !(16..=32).contains(&r.nonce.len()) {
                return Err(ApiError::invalid("nonce must be 16 to 32 bytes"));
            }
            let fields = if r.fields.is_empty() { vec![0x80] } else { r.fields };
            if crate::wire::lxmf::decode_fields(&fields).is_err() {
                return Err(ApiError::invalid("fields must be a msgpack map"));
            }
            let timestamp = if r.timestamp_s.is_finite() && r.timestamp_s > 0.0 { r.timestamp_s } else { ctx.now_s };
            let message_hash = link_post_hash(ctx.group_lxmf_hash, sender, &r.nonce, &r.content, timestamp);
            plain(Op::Post(NewMessage {
                group_id: ctx.group_id,
                message_hash,
                sender_identity_hash: sender.clone(),
                sender_display_name: String::new(),
                timestamp,
                title: r.title,
                content: r.content,
                fields,
            }))
        }
        Endpoint::Delete => {
            let r: pb::DeleteMessageRequest = decode(body)?;
            plain(Op::DeleteMessage { id: r.id })
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
            }))
        }
        Endpoint::Notifications => {
            let r: pb::NotificationsUpdate = decode(body)?;
            // The empty message (mode left out, no digest choice) means NOTIFY_FULL, as before.
            let mode = match (r.mode, r.digest) {
                (None, Some(_)) => None,
                (mode, _) => Some(notify_mode(mode.unwrap_or_default())?),
            };
            plain(Op::SetNotifications { mode, digest: r.digest })
        }
        // On the group's own destination the group is implied; a named one is ignored.
        Endpoint::DeleteGroup => decode::<pb::DeleteGroupRequest>(body).and_then(|_| plain(Op::DeleteGroup)),
        Endpoint::TransferFounder => {
            let r: pb::TransferFounderRequest = decode(body)?;
            plain(Op::TransferFounder { identity: hash16(&r.identity_hash, "identity_hash")? })
        }
    }
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
        Reply::History { messages, events } => pb::MessagesResponse {
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
        Reply::Bans(bans) => pb::BansResponse {
            bans: bans
                .into_iter()
                .map(|b| pb::BanEntry { identity_hash: hash_bytes(&b.identity_hash), reason: b.reason, banned_by: b.banned_by, banned_at: b.created_at })
                .collect(),
        }
        .encode_to_vec(),
    }
}

/// The announce app_data of a group's `meshchat.group` destination.
pub fn group_announce(name: &str, visibility: Visibility, member_count: u64, join_cost: u32, post_cost: u32, lxmf_hash: &[u8]) -> Vec<u8> {
    pb::GroupAnnounce {
        name: name.to_owned(),
        visibility: match visibility {
            Visibility::Public => pb::Visibility::Public,
            Visibility::Private => pb::Visibility::Private,
        } as i32,
        member_count: member_count.min(u64::from(u32::MAX)) as u32,
        join_stamp_cost: join_cost,
        post_stamp_cost: post_cost,
        api_version: API_VERSION,
        lxmf_destination: lxmf_hash.to_vec(),
    }
    .encode_to_vec()
}

/// `group_announce` app data with other stamp costs (the adaptive raise), the rest unchanged.
pub fn group_announce_with_costs(app_data: &[u8], join_cost: u32, post_cost: u32) -> Vec<u8> {
    match pb::GroupAnnounce::decode(app_data) {
        Ok(ad) => pb::GroupAnnounce { join_stamp_cost: join_cost, post_stamp_cost: post_cost, ..ad }.encode_to_vec(),
        Err(_) => app_data.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_costs_can_be_replaced() {
        let ad = group_announce("n", Visibility::Public, 3, 8, 6, &[1; 16]);
        let raised = pb::GroupAnnounce::decode(group_announce_with_costs(&ad, 10, 9).as_slice()).expect("decodes");
        assert_eq!((raised.name.as_str(), raised.member_count, raised.join_stamp_cost, raised.post_stamp_cost), ("n", 3, 10, 9));
    }

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
    fn envelope_round_trips() {
        let err = ApiError { stamp_cost: 8, challenge: vec![9; 32], ..ApiError::new(pb::ErrorCode::StampRequired, "x") };
        let r = pb::Response::decode(error_response(&err).as_slice()).expect("decode");
        let e = r.error.expect("error");
        assert_eq!((e.code, e.stamp_cost, e.challenge.len()), (pb::ErrorCode::StampRequired as i32, 8, 32));
        let ok = pb::Response::decode(ok_response(vec![1, 2]).as_slice()).expect("decode");
        assert!(ok.error.is_none() && ok.payload == vec![1, 2]);
    }
}
