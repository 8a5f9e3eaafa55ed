//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`) through the library entry points the
//! fuzz targets call, so `cargo test` on stable proves that no kept input panics a decoder.
//! `write_seeds` (ignored) writes the seeds made from the vectors; see docs/fuzzing.md.

use std::path::{Path, PathBuf};

use meshgroup::fuzzing::{CALLER, GROUP_KEY, GROUP_LXMF, NOW_SECS, TARGETS};
use meshgroup::wire::proto as pb;
use prost::Message as _;
use rmpv::Value;

type R = Result<(), Box<dyn std::error::Error>>;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn kept_corpus_replays_without_a_panic() -> R {
    let mut total = 0;
    for (name, run) in TARGETS {
        let dir = corpus().join(name);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry?.path();
            let data = std::fs::read(&path)?;
            // A panic names the input, so it can be run alone: `cargo +nightly fuzz run NAME FILE`.
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
            files += 1;
        }
        assert!(files > 0, "{name}: empty corpus");
        total += files;
    }
    // Each directory of fuzz/corpus is a known target (a target without an entry point would be skipped).
    for entry in std::fs::read_dir(corpus())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "fuzz/corpus/{name} has no entry in meshgroup::fuzzing::TARGETS");
    }
    assert!(total > 0);
    Ok(())
}

fn vectors() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors.json"))?)?)
}

fn hx(v: &serde_json::Value) -> Vec<u8> {
    v.as_str().and_then(|s| hex::decode(s).ok()).unwrap_or_default()
}

fn mp(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap_or_default();
    out
}

fn write(target: &str, name: &str, data: &[u8]) -> R {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), data)?;
    Ok(())
}

/// Writes the seeds derived from `tests/vectors.json` and from the API's own messages.
/// Run: `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() -> R {
    let v = vectors()?;
    let id = vec![0xe8; 16];
    let dest = GROUP_LXMF.to_vec();

    // api_request: [path selector, caller (0 identified, 1 anonymous), body].
    let paths: Vec<&str> = meshgroup::api::Endpoint::ALL.iter().map(|(_, p)| *p).chain(meshgroup::api::hosting::Path::ALL.iter().map(|(_, p)| *p)).collect();
    let challenge = meshgroup::wire::stamp::ChallengeKey::for_group(&GROUP_KEY).issue(&GROUP_LXMF, &CALLER, NOW_SECS - 60, [0; 4]);
    let fields = mp(&Value::Map(vec![(Value::from(0xFBu8), Value::from("meshgroup.v1"))]));
    let body = |path: &str| -> Vec<u8> {
        match path {
            "/api/v1/join" => {
                pb::JoinRequest { display_name: "alice".into(), note: "hello".into(), challenge: challenge.clone(), stamp: vec![7; 32] }.encode_to_vec()
            }
            "/api/v1/members" => pb::MembersRequest { offset: 2, limit: 10 }.encode_to_vec(),
            "/api/v1/join-requests/approve" | "/api/v1/join-requests/reject" => pb::DecideJoinRequest { identity_hash: id.clone() }.encode_to_vec(),
            "/api/v1/messages" => {
                pb::MessagesRequest { limit: 5, before_id: 10, after_id: 2, order: 1, include_events: true, events_after_id: 3 }.encode_to_vec()
            }
            "/api/v1/messages/send" => pb::SendMessageRequest {
                content: b"hello group".to_vec(),
                title: b"hi".to_vec(),
                fields: fields.clone(),
                timestamp_s: 1_700_000_000.5,
                nonce: vec![9; 16],
            }
            .encode_to_vec(),
            "/api/v1/messages/delete" => pb::DeleteMessageRequest { id: 42 }.encode_to_vec(),
            "/api/v1/messages/react" => pb::ReactRequest { id: 42, emoji: "👍".into(), remove: false }.encode_to_vec(),
            "/api/v1/messages/attachment" => pb::AttachmentRequest { id: 42 }.encode_to_vec(),
            "/api/v1/members/kick" => pb::KickRequest { identity_hash: id.clone() }.encode_to_vec(),
            "/api/v1/members/ban" => pb::BanRequest { identity_hash: id.clone(), reason: "spam".into() }.encode_to_vec(),
            "/api/v1/members/unban" => pb::UnbanRequest { identity_hash: id.clone() }.encode_to_vec(),
            "/api/v1/members/permissions" => pb::PermissionsRequest { identity_hash: id.clone(), rights: 3 }.encode_to_vec(),
            "/api/v1/display-name/update" => pb::DisplayNameUpdate { public_name: Some("Mesh".into()), private_name: Some("Family".into()) }.encode_to_vec(),
            "/api/v1/settings/update" => pb::SettingsUpdate {
                visibility: Some(1),
                join_stamp_cost: Some(8),
                post_stamp_cost: Some(12),
                history_public: Some(false),
                listed: Some(true),
                attachment_max_bytes: Some(32768),
                attachment_kinds: Some(5),
            }
            .encode_to_vec(),
            "/api/v1/notifications/update" => pb::NotificationsUpdate { mode: Some(1), digest: Some(true), text_only: Some(true) }.encode_to_vec(),
            "/api/v1/groups/delete" => pb::DeleteGroupRequest { group_destination: dest.clone() }.encode_to_vec(),
            "/api/v1/groups/transfer" => pb::TransferFounderRequest { identity_hash: id.clone(), group_destination: dest.clone() }.encode_to_vec(),
            "/api/v1/groups" => pb::DirectoryRequest { offset: 1, limit: 50, sort: 1, name_filter: "mesh".into() }.encode_to_vec(),
            "/api/v1/groups/create" => pb::CreateGroupRequest {
                name: "Mesh Friends".into(),
                visibility: 1,
                private_name: "Cottle".into(),
                join_stamp_cost: 8,
                post_stamp_cost: 8,
                challenge: challenge.clone(),
                stamp: vec![7; 32],
            }
            .encode_to_vec(),
            _ => Vec::new(),
        }
    };
    for (i, path) in paths.iter().enumerate() {
        let label = path.trim_start_matches("/api/v1/").replace('/', "_");
        let mut seed = vec![i as u8, 0];
        seed.extend(body(path));
        write("api_request", &format!("{i:02}-{label}"), &seed)?;
    }

    // request_envelope: the reference's request and response, and one of each kind of data element.
    // client_reply: answers as a server sends them, in their response envelope.
    let answer = |resp: pb::Response| mp(&Value::Array(vec![Value::Binary(vec![7; 16]), Value::Binary(resp.encode_to_vec())]));
    let history = pb::MessagesResponse {
        messages: vec![pb::GroupMessage { id: 3, content: b"hi".to_vec(), sender_identity_hash: id.clone(), ..Default::default() }],
        events: vec![pb::GroupEvent { id: 9, kind: "message_deleted".into(), subject: "2".into(), ..Default::default() }],
        ..Default::default()
    };
    write("client_reply", "messages", &answer(pb::Response { error: None, payload: history.encode_to_vec() }))?;
    let stamp_required = pb::Error { code: pb::ErrorCode::StampRequired as i32, message: "stamp".into(), stamp_cost: 8, challenge: vec![1; 32] };
    write("client_reply", "stamp_required", &answer(pb::Response { error: Some(stamp_required), payload: vec![] }))?;
    write("client_reply", "not_protobuf", &mp(&Value::Array(vec![Value::Binary(vec![7; 16]), Value::Binary(vec![0xff; 4])])))?;
    write("client_reply", "json_map", &mp(&Value::Array(vec![Value::Binary(vec![7; 16]), Value::Map(vec![(Value::from("error"), Value::from("x"))])])))?;
    write("request_envelope", "reference_request", &hx(&v["requests"]["example_packed_request_hex"]))?;
    write("request_envelope", "reference_response", &hx(&v["requests"]["example_packed_response_hex"]))?;
    let path_hash = hx(&v["requests"]["path_hashes"]["/api/v1/join"]);
    let join = body("/api/v1/join");
    write("request_envelope", "join_bin", &mp(&Value::Array(vec![Value::F64(1.7e9), Value::Binary(path_hash.clone()), Value::Binary(join)])))?;
    write("request_envelope", "get_list", &mp(&Value::Array(vec![Value::F64(1.7e9), Value::Binary(path_hash), Value::Array(vec![Value::Nil, Value::Nil])])))?;

    // lxmf_message: the reference messages, direct and opportunistic, and a text command.
    let m = &v["lxmf_message"];
    write("lxmf_message", "reference", &hx(&m["packed_hex"]))?;
    write("lxmf_message", "reference_stamped", &hx(&m["stamped_with_ticket_packed_hex"]))?;
    let mut opp = hx(&m["destination_hash_hex"]);
    opp.extend(hx(&m["opportunistic_packet_plaintext_hex"]));
    write("lxmf_message", "reference_opportunistic", &opp)?;
    let key = meshgroup::wire::lxmf::signer(&GROUP_KEY)?;
    let ticket = Value::Array(vec![Value::F64(1.7e9), Value::Binary(vec![0x0f; 16])]);
    for (name, content) in [("cmd_ban", "/ban <e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8e8> spam"), ("cmd_history", "/history 7"), ("cmd_notify", "/notify digest on")] {
        let out = meshgroup::wire::lxmf::OutgoingMessage {
            destination: GROUP_LXMF,
            source: [0xe8; 16],
            timestamp: 1.7e9,
            title: b"",
            content: content.as_bytes(),
            fields: vec![(Value::from(0x0Cu8), ticket.clone())],
            stamp: Some(&[1; 32]),
        };
        write("lxmf_message", name, &meshgroup::wire::lxmf::pack(&out, &key)?.0)?;
    }

    // announce: the reference app data (delivery, legacy, propagation node) and ours.
    let a = &v["announce_lxmf_delivery"];
    write("announce", "delivery", &hx(&a["app_data_hex"]))?;
    write("announce", "delivery_legacy", &hx(&a["legacy_app_data_example"]["hex"]))?;
    write("announce", "propagation_node", &hx(&v["propagation"]["pn_app_data_example_hex"]))?;
    let group = meshgroup::wire::announce::group_announce("Mesh Friends", meshgroup::domain::Visibility::Public, 12, 8, 8, &GROUP_LXMF);
    write("announce", "group", &group)?;
    let server =
        pb::ServerAnnounce { name: "server".into(), version: "0.1.0".into(), public_groups: 3, create_stamp_cost: 8, api_version: 1, ..Default::default() };
    write("announce", "server", &server.encode_to_vec())?;

    // stamp: a challenge we issued with a stamp, the reference stamp, a ticket stamp.
    let mut s = challenge.clone();
    s.extend([7; 32]);
    write("stamp", "join_challenge", &s)?;
    let ex = &v["stamps"]["example_stamp"];
    let mut s = hx(&ex["message_id_hex"]);
    s.extend(hx(&ex["stamp_hex"]));
    write("stamp", "reference_stamp", &s)?;
    let mut s = hx(&m["message_id_hex"]);
    s.extend(hx(&m["ticket_hex"]));
    write("stamp", "reference_ticket", &s)?;

    // admin_json: what the CLI sends, and the server's answers.
    use meshgroup::group::Op;
    let requests = [
        ("start", meshgroup::admin::AdminRequest { group: 3, op: None, start: true, costs: false }),
        (
            "ban",
            meshgroup::admin::AdminRequest { group: 3, op: Some(Op::Ban { identity: "e8".repeat(16), reason: "spam".into() }), start: false, costs: false },
        ),
        ("members", meshgroup::admin::AdminRequest { group: 3, op: Some(Op::Members { offset: 0, limit: 30 }), start: false, costs: false }),
        (
            "permissions",
            meshgroup::admin::AdminRequest {
                group: 3,
                op: Some(Op::SetPermissions { identity: "e8".repeat(16), rights: meshgroup::domain::Rights(3) }),
                start: false,
                costs: false,
            },
        ),
    ];
    for (name, req) in requests {
        write("admin_json", name, format!("{}\n", serde_json::to_string(&req)?).as_bytes())?;
    }
    let refused = meshgroup::admin::AdminResponse { error: Some("no such member".into()), failure: false, costs: None };
    write("admin_json", "answer_refused", serde_json::to_string(&refused)?.as_bytes())?;

    // propagation_response: the id list, the messages (the reference's, encrypted to the harness
    // group), and a refusal code, each in its response envelope.
    let rid = Value::Binary(vec![0x25; 16]);
    let lxmf_data = hx(&v["propagation"]["lxmf_data_hex"]);
    let transient = hx(&v["propagation"]["transient_id_hex"]);
    let envelope = |resp: Value| mp(&Value::Array(vec![rid.clone(), resp]));
    write("propagation_response", "list", &envelope(Value::Array(vec![Value::Binary(transient)])))?;
    write("propagation_response", "messages", &envelope(Value::Array(vec![Value::Binary(lxmf_data), Value::Binary(vec![0; 20])])))?;
    write("propagation_response", "refused", &envelope(Value::from(0xf0u8)))?;
    Ok(())
}
