//! The authorization matrix: every role against every operation, for public and private groups,
//! each cell run through `GroupCore::apply` on a real store. The README shows the same table.
//!
//! Legend: Y allowed, F forbidden, U unauthenticated (identify first), - not applicable.

use meshgroup::domain::{NotifyMode, Rights};
use meshgroup::group::{Caller, CreateGroup, GroupCore, GroupError, MessageRef, Op, Settings, create_group};
use meshgroup::store::{HistoryQuery, NewMessage, Store};

const ROLES: [&str; 13] =
    ["owner", "founder", "approve", "kick", "ban", "delete", "rename", "settings", "permissions", "member", "non-member", "banned", "anonymous"];

/// (operation, public group row, private group row); columns follow ROLES.
const MATRIX: &[(&str, &str, &str)] = &[
    ("info", "YYYYYYYYYYYYY", "YYYYYYYYYYYYY"),
    ("join", "-YYYYYYYYYYFU", "-YYYYYYYYYYFU"),
    ("leave", "-FYYYYYYYYFFU", "-FYYYYYYYYFFU"),
    ("members", "YYYYYYYYYYYFY", "YYYYYYYYYYFFU"),
    ("join-requests", "YYYFFFFFFFFFU", "YYYFFFFFFFFFU"),
    ("join-requests/approve", "YYYFFFFFFFFFU", "YYYFFFFFFFFFU"),
    ("messages", "YYYYYYYYYYYFY", "YYYYYYYYYYFFU"),
    ("messages/send", "-YYYYYYYYYFFU", "-YYYYYYYYYFFU"),
    ("messages/delete (own)", "-YYYYYYYYYFFU", "-YYYYYYYYYFFU"),
    ("messages/delete (any)", "YYFFFYFFFFFFU", "YYFFFYFFFFFFU"),
    ("messages/react", "-YYYYYYYYYFFU", "-YYYYYYYYYFFU"),
    ("messages/attachment", "YYYYYYYYYYYFY", "YYYYYYYYYYFFU"),
    ("members/kick", "YYFYFFFFFFFFU", "YYFYFFFFFFFFU"),
    ("members/ban", "YYFFYFFFFFFFU", "YYFFYFFFFFFFU"),
    ("members/unban", "YYFFYFFFFFFFU", "YYFFYFFFFFFFU"),
    ("bans", "YYFFYFFFFFFFU", "YYFFYFFFFFFFU"),
    ("members/permissions", "YYFFFFFFYFFFU", "YYFFFFFFYFFFU"),
    ("display-name/update", "YYFFFFYFFFFFU", "YYFFFFYFFFFFU"),
    ("settings/update", "YYFFFFFYFFFFU", "YYFFFFFYFFFFU"),
    ("notifications/update", "-YYYYYYYYYFFU", "-YYYYYYYYYFFU"),
    ("groups/delete", "YYFFFFFFFFFFU", "YYFFFFFFFFFFU"),
    ("groups/transfer", "YYFFFFFFFFFFU", "YYFFFFFFFFFFU"),
];

fn id(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

const TARGET: u8 = 0xee;
const PENDING: u8 = 0xdd;

/// The identity playing a role (None for the owner and anonymous).
fn identity_of(role: usize) -> Option<String> {
    match ROLES[role] {
        "owner" | "anonymous" => None,
        _ => Some(id(role as u8 + 1)),
    }
}

fn caller_of(role: usize) -> Caller {
    match ROLES[role] {
        "owner" => Caller::Owner,
        "anonymous" => Caller::Anonymous,
        _ => Caller::Identity(identity_of(role).unwrap_or_default()),
    }
}

fn message(group_id: i64, sender: &str, tag: &str) -> NewMessage {
    NewMessage {
        group_id,
        message_hash: format!("{sender}{tag}"),
        sender_identity_hash: sender.into(),
        sender_display_name: String::new(),
        timestamp: 1.0,
        title: vec![],
        content: b"hi".to_vec(),
        fields: vec![0x80],
        reply_to_id: None,
    }
}

/// A group with a founder, one delegate per right, a member, a target member, a ban, a pending request,
/// and one message by every identity.
async fn setup(store: &Store, private: bool) -> Result<(GroupCore, Vec<i64>, i64), GroupError> {
    let g = create_group(store, CreateGroup { name: "m".into(), private, founder: Some(id(2)), ..Default::default() }).await?;
    let rights = [Rights::APPROVE, Rights::KICK, Rights::BAN, Rights::DELETE, Rights::RENAME, Rights::SETTINGS, Rights::PERMISSIONS];
    for (i, r) in rights.iter().enumerate() {
        store.add_member(g.id, &id(i as u8 + 3), "delegate", r.0, "full").await?;
    }
    store.add_member(g.id, &id(10), "member", 0, "full").await?;
    store.add_member(g.id, &id(TARGET), "target", 0, "full").await?;
    store.ban(g.id, &id(12), "spam", "owner").await?;
    store.file_join_request(g.id, &id(PENDING), "pending", "").await?;
    let mut own = vec![0; ROLES.len()];
    for (role, slot) in own.iter_mut().enumerate() {
        if let Some(who) = identity_of(role) {
            *slot = store.insert_message(message(g.id, &who, "own")).await?.id();
        }
    }
    let target_msg = store.insert_message(message(g.id, &id(TARGET), "t")).await?.id();
    Ok((GroupCore::load(store.clone(), g).await?, own, target_msg))
}

fn op_for(name: &str, role: usize, own_msg: i64, target_msg: i64, group_id: i64) -> Op {
    let who = identity_of(role).unwrap_or_default();
    match name {
        "info" => Op::Info,
        "join" => Op::Join { display_name: "x".into(), note: String::new(), stamp_verified: true },
        "leave" => Op::Leave,
        "members" => Op::Members { offset: 0, limit: 10 },
        "join-requests" => Op::JoinRequests,
        "join-requests/approve" => Op::Approve { identity: id(PENDING) },
        "messages" => Op::History(HistoryQuery { limit: 5, ..Default::default() }),
        "messages/send" => Op::Post(message(group_id, &who, "new")),
        "messages/delete (own)" => Op::DeleteMessage { id: if who.is_empty() { target_msg } else { own_msg } },
        "messages/delete (any)" => Op::DeleteMessage { id: target_msg },
        "messages/react" => Op::React { target: MessageRef::Id(target_msg), emoji: "👍".into(), remove: false },
        "messages/attachment" => Op::Attachments { id: target_msg },
        "members/kick" => Op::Kick { identity: id(TARGET) },
        "members/ban" => Op::Ban { identity: id(TARGET), reason: "spam".into() },
        "members/unban" => Op::Unban { identity: id(12) },
        "bans" => Op::Bans,
        "members/permissions" => Op::SetPermissions { identity: id(TARGET), rights: Rights::PERMISSIONS },
        "display-name/update" => Op::Rename { public_name: Some("new".into()), private_name: None },
        "settings/update" => Op::UpdateSettings(Settings { history_public: Some(true), ..Default::default() }),
        "notifications/update" => Op::SetNotifications { mode: Some(NotifyMode::Short), digest: None, text_only: None },
        "groups/delete" => Op::DeleteGroup,
        "groups/transfer" => Op::TransferFounder { identity: id(TARGET) },
        other => panic!("no op for {other}"),
    }
}

fn outcome(r: &Result<meshgroup::group::Reply, GroupError>) -> char {
    match r {
        Ok(_) => 'Y',
        Err(GroupError::Forbidden(_)) => 'F',
        Err(GroupError::Unauthenticated) => 'U',
        // Allowed, and the test's message has no attachment to hand out.
        Err(GroupError::NotFound(what)) if what == "attachment" => 'Y',
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn every_cell_of_the_matrix_holds() -> Result<(), Box<dyn std::error::Error>> {
    let t = meshgroup::store::testing::sqlite().await?;
    let mut failures = Vec::new();
    let mut cells = 0;
    for (name, public_row, private_row) in MATRIX {
        for (private, row) in [(false, public_row), (true, private_row)] {
            for (role, want) in row.chars().enumerate() {
                if want == '-' {
                    continue;
                }
                let (mut core, own, target_msg) = setup(&t.store, private).await?;
                let group_id = core.group().id;
                let got = outcome(&core.apply(&caller_of(role), op_for(name, role, own[role], target_msg, group_id)).await);
                cells += 1;
                if got != want {
                    failures.push(format!("{name} / {} / {}: want {want}, got {got}", ROLES[role], if private { "private" } else { "public" }));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cells} cells wrong:\n{}", failures.len(), failures.join("\n"));
    assert!(cells > 350);
    Ok(())
}
