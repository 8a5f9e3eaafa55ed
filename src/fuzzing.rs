//! Entry points of the fuzz targets (`fuzz/`) and of the corpus replay test (`tests/fuzz_corpus.rs`).
//!
//! Each takes arbitrary bytes and runs one decoder of network input the way the server does, with
//! whatever the decoder returns checked for the few properties a caller relies on. None may panic
//! on any input: a panic here is a bug in the decoder, never in the harness. Keeping them in the
//! library lets `cargo test` replay the kept corpus on stable through the very same calls.

use std::sync::OnceLock;

use prost::Message as _;

use crate::api::hosting::Path;
use crate::api::{DecodeContext, Endpoint, decode, decode_request, error_response, hash16};
use crate::config::LimitsConfig;
use crate::group::Caller;
use crate::wire::proto as pb;
use crate::wire::stamp::{ChallengeKey, STAMP_MAX_LEN};

/// One entry point: arbitrary bytes in, nothing out, no panic.
pub type Target = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("api_request", api_request),
    ("api_request_json", api_request_json),
    ("request_envelope", request_envelope),
    ("lxmf_message", lxmf_message),
    ("announce", announce),
    ("stamp", stamp),
    ("admin_json", admin_json),
    ("propagation_response", propagation_response),
    ("client_reply", client_reply),
];

/// The test identity of `tests/vectors.json` (`peer_identity`), whose `lxmf.delivery` the
/// propagation vector is encrypted to: the group of the harness.
pub const GROUP_KEY: [u8; 64] = {
    let mut k = [0x33; 64];
    let mut i = 32;
    while i < 64 {
        k[i] = 0x44;
        i += 1;
    }
    k
};
/// `lxmf.delivery` of [`GROUP_KEY`].
pub const GROUP_LXMF: [u8; 16] = [0x46, 0x26, 0x6e, 0xde, 0xb1, 0x41, 0x11, 0x7b, 0xed, 0x38, 0xad, 0x12, 0x60, 0xe4, 0x41, 0x0c];
/// The caller identity and the clock the stamp harness checks challenges against.
pub const CALLER: [u8; 16] = [0xe8; 16];
pub const NOW_SECS: u64 = 1_700_000_000;

/// Every path of both destinations: the group's (`Endpoint`), then the server's (`Path`).
fn path_count() -> usize {
    Endpoint::ALL.len() + Path::ALL.len()
}

/// The decoding context of the harness's group, for `caller`.
fn group_context<'a>(caller: &'a Caller, limits: &LimitsConfig) -> DecodeContext<'a> {
    DecodeContext { group_id: 1, group_lxmf_hash: &GROUP_LXMF, caller, default_page: limits.default_page, max_page: limits.max_page, now_s: NOW_SECS as f64 }
}

/// A group path's body in MeshChat's JSON dialect: byte 0 picks the path, byte 1 the caller
/// (even: identified), byte 2 nil (odd) or bytes; the rest is the body. It must decode or be
/// refused INVALID_ARGUMENT (UNAUTHENTICATED for an anonymous caller), never panic.
pub fn api_request_json(data: &[u8]) {
    let [sel, who, nil, body @ ..] = data else { return };
    let identity = Caller::Identity("e8".repeat(16));
    let caller = if who % 2 == 0 { &identity } else { &Caller::Anonymous };
    let limits = LimitsConfig::default();
    let (ep, _) = Endpoint::ALL[usize::from(*sel) % Endpoint::ALL.len()];
    let ctx = group_context(caller, &limits);
    let body = (nil % 2 == 0).then_some(body);
    match crate::api::decode_json_request(ep, body, &ctx) {
        Ok(d) => {
            if let Some((_, stamp)) = d.join_stamp {
                assert!(stamp.len() <= STAMP_MAX_LEN, "an over-long stamp was let through");
            }
        }
        Err(err) => {
            let allowed = [pb::ErrorCode::InvalidArgument, pb::ErrorCode::Unauthenticated, pb::ErrorCode::NotFound];
            assert!(allowed.contains(&err.code), "JSON decoding refused with {:?}: {}", err.code, err.message);
            let _ = crate::api::json_error(&err);
        }
    }
}

/// Input: `[path selector, caller selector, body…]`. The selector picks a path of the group or
/// the server destination (modulo their number); an even caller byte is an identified caller.
/// A refusal must be INVALID_ARGUMENT, or UNAUTHENTICATED for an anonymous caller.
pub fn api_request(data: &[u8]) {
    let [sel, who, body @ ..] = data else { return };
    let identity = Caller::Identity("e8".repeat(16));
    let caller = if who % 2 == 0 { &identity } else { &Caller::Anonymous };
    let limits = LimitsConfig::default();
    let index = usize::from(*sel) % path_count();
    let result: Result<(), crate::api::ApiError> = match Endpoint::ALL.get(index) {
        Some((ep, _)) => {
            let ctx = group_context(caller, &limits);
            decode_request(*ep, body, &ctx).map(|d| {
                if let Some((_, stamp)) = d.join_stamp {
                    assert!(stamp.len() <= STAMP_MAX_LEN, "an over-long stamp was let through");
                }
            })
        }
        None => match Path::ALL[index - Endpoint::ALL.len()].0 {
            Path::Directory => hosting_directory(body, &limits),
            Path::Create => decode::<pb::CreateGroupRequest>(body).and_then(|r| crate::api::hosting::create_private(r.visibility).map(|_| ())),
            Path::Delete => decode::<pb::DeleteGroupRequest>(body).and_then(|r| crate::api::hosting::group_destination(&r.group_destination).map(|_| ())),
            Path::Transfer => decode::<pb::TransferFounderRequest>(body)
                .and_then(|r| hash16(&r.identity_hash, "identity_hash").and_then(|_| crate::api::hosting::group_destination(&r.group_destination).map(|_| ()))),
        },
    };
    if let Err(err) = result {
        let allowed = err.code == pb::ErrorCode::InvalidArgument || (err.code == pb::ErrorCode::Unauthenticated && *caller == Caller::Anonymous);
        assert!(allowed, "unexpected refusal {err:?}");
        // The refusal goes back as an envelope the caller can decode.
        assert!(pb::Response::decode(error_response(&err).as_slice()).is_ok());
    }
}

fn hosting_directory(body: &[u8], limits: &LimitsConfig) -> Result<(), crate::api::ApiError> {
    let (q, _) = crate::api::hosting::directory_query(body, limits)?;
    assert!(q.limit <= u64::from(limits.max_page.max(limits.default_page)), "page over the limit");
    Ok(())
}

/// Input: the plaintext of an RNS request (or response) on a link.
pub fn request_envelope(data: &[u8]) {
    if let Some(r) = crate::wire::envelope::unpack_request(data) {
        let _ = Endpoint::from_path_hash(&r.path_hash);
        let _ = crate::api::hosting::path_label(&r.path_hash);
    }
    let _ = crate::wire::envelope::unpack_response(data);
}

/// Input: a packed LXMF message (a direct delivery; an opportunistic one is the same with the
/// destination prefixed). Its fields (ticket, reply target, reaction, attachments) and text command are read as inbound handling does.
pub fn lxmf_message(data: &[u8]) {
    if let Ok(msg) = crate::wire::lxmf::unpack(data) {
        assert_eq!(&msg.signed_part[..32], &data[..32], "the signed part starts with the addresses");
        if let Ok(fields) = msg.fields_map() {
            let _ = crate::wire::lxmf::ticket_field(&fields);
            let _ = crate::wire::lxmf::reply_to_field(&fields);
            let _ = crate::wire::lxmf::reaction_field(&fields);
            let _ = crate::wire::lxmf::attachment_size(&fields);
            let _ = crate::wire::lxmf::attachments(&fields);
            // What `meshgroup client` reads from a fan-out copy.
            let _ = crate::wire::lxmf::read_attribution(&fields);
        }
        text_command(&String::from_utf8_lossy(&msg.content));
    }
    // The API's `fields` and a bare text are read by the same functions.
    let _ = crate::wire::lxmf::decode_fields(data);
    text_command(&String::from_utf8_lossy(data));
}

fn text_command(text: &str) {
    if let Some(Ok(cmd)) = crate::lxmf::commands::parse(text) {
        let _ = cmd.op("name", false);
    }
}

/// Input: an announce's app_data, read as each destination kind we listen to would read it.
pub fn announce(data: &[u8]) {
    let (name, cost) = crate::lxmf::courier::delivery_announce(data);
    assert!(cost <= 254 && name.is_none_or(|n| !n.is_empty() && n.chars().count() <= 64));
    if let Some(cost) = crate::lxmf::propagation::announced_cost(data) {
        assert!(cost <= 254);
    }
    if let Ok(a) = crate::wire::announce::decode_group_announce(data) {
        assert!(a.lxmf_destination.is_empty() || a.lxmf_destination.len() == 16);
    }
    let _ = pb::ServerAnnounce::decode(data);
}

/// Input: `challenge(up to 32) ‖ stamp`, as a join or creation request carries them; the stamp
/// alone is also tried as an LXMF post's stamp and ticket.
pub fn stamp(data: &[u8]) {
    static KEY: OnceLock<ChallengeKey> = OnceLock::new();
    let key = KEY.get_or_init(|| ChallengeKey::for_group(&GROUP_KEY));
    let (challenge, stamp) = data.split_at(data.len().min(32));
    let _ = key.verify(challenge, &GROUP_LXMF, &CALLER, NOW_SECS);
    // One expand round: the same code as the 3000 the server uses, at fuzzing speed.
    let value = crate::wire::stamp::value(&crate::wire::stamp::workblock(challenge, 1), stamp);
    assert!(value <= 256);
    let id: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(challenge)).into();
    let _ = lxmf_core::stamp::ticket_stamp(stamp, &id);
}

/// Input: one line on the admin socket (a request from the CLI, or the server's answer). A
/// request that parses must survive its own re-encoding, as the CLI sends it.
pub fn admin_json(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(req) = crate::admin::parse_request(line) {
        let again = serde_json::to_string(&req).map_err(|e| e.to_string()).and_then(|s| crate::admin::parse_request(&s).map_err(|e| e.to_string()));
        assert!(again.is_ok(), "a parsed admin request does not re-encode: {again:?}");
    }
    let _ = crate::admin::parse_response(line);
}

/// Input: the plaintext of a propagation node's response to `/get` (the envelope included): read
/// as the message id list, then as the messages, opened with the harness group's keys.
pub fn propagation_response(data: &[u8]) {
    static INBOX: OnceLock<Option<crate::lxmf::propagation::Inbox>> = OnceLock::new();
    let Ok(response) = crate::wire::envelope::unpack_response(data) else { return };
    let Ok(items) = crate::lxmf::propagation::listed(response) else { return };
    if let Some(inbox) = INBOX.get_or_init(|| crate::lxmf::propagation::Inbox::new(&GROUP_KEY, GROUP_LXMF).ok()) {
        let (messages, haves) = inbox.open(items);
        assert!(messages.len() <= haves.len());
        for m in messages {
            let _ = crate::wire::lxmf::unpack(&m);
        }
    }
}

/// Input: a link-API answer as `meshgroup client` receives it (the response packet's plaintext):
/// the response envelope, the `Response`, then the payload as each response type the client reads.
pub fn client_reply(data: &[u8]) {
    use crate::client::decode_reply;
    let Ok(response) = crate::wire::envelope::unpack_response(data) else { return };
    // An answer is either refused or a payload, whatever the type asked for.
    let refused = matches!(decode_reply::<pb::Ack>(response.clone()), Err(crate::client::ClientError::Refused { .. }));
    assert_eq!(refused, matches!(decode_reply::<pb::InfoResponse>(response.clone()), Err(crate::client::ClientError::Refused { .. })));
    let _ = decode_reply::<pb::MessagesResponse>(response.clone());
    let _ = decode_reply::<pb::MembersResponse>(response.clone());
    let _ = decode_reply::<pb::JoinResponse>(response.clone());
    let _ = decode_reply::<pb::DirectoryResponse>(response.clone());
    let _ = decode_reply::<pb::JoinRequestsResponse>(response);
}
