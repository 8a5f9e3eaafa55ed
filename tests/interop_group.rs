//! Issue 4's "Done when" list, shown with real Python RNS/LXMF peers (rns 1.5.7, lxmf 1.2.1) over
//! real links to the real `meshgroup serve` binary: membership, private groups, moderation and
//! delegation, join stamps made by Python LXMF's stamp code, notification modes, renames reaching
//! the next announce, and a 100,000-message history read over a link.
//!
//! The operator (the owner) acts only through the CLI, and only to set up the first admin; every
//! other step is a protobuf request on a link identified as the acting peer.

mod common;

use std::time::Instant;

use common::{Peer, R, Server, poll_secs, s};
use meshgroup::wire::proto as pb;
use serde_json::json;

const JOIN: &str = "/api/v1/join";
const MESSAGES: &str = "/api/v1/messages";
const SEND: &str = "/api/v1/messages/send";

fn raw(hex_hash: &str) -> R<Vec<u8>> {
    Ok(hex::decode(hex_hash)?)
}

/// Polls `f` every 100 ms for up to `secs`.
fn post(peer: &mut Peer, link: &str, text: &str) -> R<i64> {
    let req = pb::SendMessageRequest { content: text.as_bytes().to_vec(), nonce: rand::random::<[u8; 16]>().to_vec(), ..Default::default() };
    let r: pb::SendMessageResponse = peer.request(link, SEND, &req)?.ok()?;
    assert!(!r.duplicate);
    Ok(r.id)
}

fn history(peer: &mut Peer, link: &str, q: pb::MessagesRequest) -> R<Vec<pb::GroupMessage>> {
    Ok(peer.request(link, MESSAGES, &q)?.ok::<pb::MessagesResponse>()?.messages)
}

fn latest(peer: &mut Peer, link: &str) -> R<Vec<pb::GroupMessage>> {
    history(peer, link, pb::MessagesRequest::default())
}

fn members(peer: &mut Peer, link: &str) -> R<Vec<Vec<u8>>> {
    let r: pb::MembersResponse = peer.request(link, "/api/v1/members", &pb::MembersRequest::default())?.ok()?;
    Ok(r.members.into_iter().map(|m| m.identity_hash).collect())
}

/// Waits for a live announce (not a path response) of `dest` whose app_data satisfies `want`.
fn next_announce(peer: &mut Peer, dest: &str, since: &mut u64, want: impl Fn(&pb::GroupAnnounce) -> bool) -> R<pb::GroupAnnounce> {
    poll_secs(45, "an announce with the new app_data", || {
        let v = peer.call(json!({"cmd": "heard", "dest": dest, "since": *since, "timeout": 2}))?;
        *since = v["total"].as_u64().unwrap_or(*since);
        for a in v["announces"].as_array().into_iter().flatten() {
            let ad = meshgroup::wire::announce::decode_group_announce(hex::decode(a["app_data"].as_str().unwrap_or_default())?.as_slice())?;
            if a["path_response"] == json!(false) && want(&ad) {
                return Ok(Some(ad));
            }
        }
        Ok(None)
    })
}

/// The owner's one act through the CLI, on the running server: make `admin` a member holding
/// `rights`. Opens the admin's link and waits until the server has picked the change up.
fn first_admin(server: &Server, peer: &mut Peer, gid: &str, dest: &str, rights: &str, bits: u32) -> R<String> {
    eprintln!("server dir {}", server.dir.display());
    let admin = peer.identity("admin")?;
    server.cli(&["member", "add", gid, &admin, "--name", "Admin", "--rights", rights])?;
    peer.link("admin", dest, Some("admin"))?;
    poll_secs(15, "the CLI change to reach the server", || Ok(peer.info("admin").ok().filter(|i| i.is_member && i.rights == bits).map(|_| ())))?;
    Ok(admin)
}

#[test]
fn stranger_joins_public_group_and_reads_history() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Mesh Commons"])?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    let dest = s(&g, "group_destination_hash");
    let alice = peer.identity("alice")?;
    let bob = peer.identity("bob")?;

    peer.link("alice", &dest, Some("alice"))?;
    assert_eq!(peer.join("alice", "Alice")?, pb::JoinState::Joined);
    let ids: Vec<i64> = (0..3).map(|i| post(&mut peer, "alice", &format!("hello {i}"))).collect::<R<_>>()?;

    peer.link("bob", &dest, Some("bob"))?;
    let before = peer.info("bob")?;
    assert_eq!((before.name.as_str(), before.is_member, before.member_count), ("Mesh Commons", false, 1));
    assert_eq!(peer.join("bob", "Bob")?, pb::JoinState::Joined);
    assert_eq!(peer.join("bob", "Bob")?, pb::JoinState::AlreadyMember);
    let after = peer.info("bob")?;
    assert_eq!((after.is_member, after.member_count, after.rights), (true, 2, 0));

    let page = latest(&mut peer, "bob")?;
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>(), "newest first");
    assert_eq!(page[0].content, b"hello 2");
    assert_eq!((page[0].sender_identity_hash.clone(), page[0].sender_display_name.as_str()), (raw(&alice)?, "Alice"));
    assert!(page.iter().all(|m| !m.deleted && m.message_hash.len() == 32));
    let mut listed = members(&mut peer, "bob")?;
    listed.sort();
    let mut want = vec![raw(&alice)?, raw(&bob)?];
    want.sort();
    assert_eq!(listed, want);

    // Issue 16, item 3: once alice leaves, her posts keep the name she posted under.
    peer.request("alice", "/api/v1/leave", &pb::LeaveRequest {})?.ok::<pb::Ack>()?;
    let page = latest(&mut peer, "bob")?;
    assert!(page.iter().all(|m| m.sender_display_name == "Alice"), "{:?}", page.iter().map(|m| &m.sender_display_name).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn private_group_join_requests_approved_and_rejected() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Cover Name", "--private", "--private-name", "Cottle Family Chat"])?;
    let gid = g["id"].to_string();
    let dest = s(&g, "group_destination_hash");
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    // The owner's only act: the first admin, who holds nothing but the approve right.
    first_admin(&server, &mut peer, &gid, &dest, "approve", pb::Rights::Approve as u32)?;
    let carol = peer.identity("carol")?;
    let dave = peer.identity("dave")?;

    let a = peer.info("admin")?;
    assert_eq!((a.name.as_str(), a.rights), ("Cottle Family Chat", pb::Rights::Approve as u32));
    post(&mut peer, "admin", "family news")?;
    post(&mut peer, "admin", "dinner at six")?;

    for (who, note) in [("carol", "it's Carol, from the garden"), ("dave", "let me in")] {
        peer.link(who, &dest, Some(who))?;
        assert_eq!(peer.info(who)?.name, "Private Group");
        let req = pb::JoinRequest { display_name: who.to_uppercase(), note: note.into(), ..Default::default() };
        let r: pb::JoinResponse = peer.request(who, JOIN, &req)?.ok()?;
        assert_eq!(r.state, pb::JoinState::Requested as i32);
        assert_eq!(peer.code(who, MESSAGES, &pb::MessagesRequest::default())?, Some(pb::ErrorCode::Forbidden));
    }
    // Approving is all this admin may do.
    assert_eq!(peer.code("admin", "/api/v1/members/kick", &pb::KickRequest { identity_hash: raw(&carol)? })?, Some(pb::ErrorCode::Forbidden));
    assert_eq!(peer.code("carol", "/api/v1/join-requests", &pb::JoinRequestsRequest {})?, Some(pb::ErrorCode::Forbidden));

    let pending: pb::JoinRequestsResponse = peer.request("admin", "/api/v1/join-requests", &pb::JoinRequestsRequest {})?.ok()?;
    let mut seen: Vec<(Vec<u8>, String, String)> = pending.requests.iter().map(|r| (r.identity_hash.clone(), r.display_name.clone(), r.note.clone())).collect();
    seen.sort();
    let mut want = vec![(raw(&carol)?, "CAROL".to_owned(), "it's Carol, from the garden".to_owned()), (raw(&dave)?, "DAVE".to_owned(), "let me in".to_owned())];
    want.sort();
    assert_eq!(seen, want);

    peer.request("admin", "/api/v1/join-requests/approve", &pb::DecideJoinRequest { identity_hash: raw(&carol)? })?.ok::<pb::Ack>()?;
    peer.request("admin", "/api/v1/join-requests/reject", &pb::DecideJoinRequest { identity_hash: raw(&dave)? })?.ok::<pb::Ack>()?;
    let left: pb::JoinRequestsResponse = peer.request("admin", "/api/v1/join-requests", &pb::JoinRequestsRequest {})?.ok()?;
    assert!(left.requests.is_empty());

    let c = peer.info("carol")?;
    assert_eq!((c.name.as_str(), c.is_member, c.member_count), ("Cottle Family Chat", true, 2));
    let page = latest(&mut peer, "carol")?;
    assert_eq!(page.iter().map(|m| m.content.as_slice()).collect::<Vec<_>>(), vec![&b"dinner at six"[..], b"family news"]);

    let d = peer.info("dave")?;
    assert_eq!((d.name.as_str(), d.is_member), ("Private Group", false));
    assert_eq!(peer.code("dave", MESSAGES, &pb::MessagesRequest::default())?, Some(pb::ErrorCode::Forbidden));
    assert_eq!(peer.code("dave", "/api/v1/members", &pb::MembersRequest::default())?, Some(pb::ErrorCode::Forbidden));
    Ok(())
}

#[test]
fn admin_kicks_bans_unbans_deletes_and_delegates_kick() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Moderated"])?;
    let gid = g["id"].to_string();
    let dest = s(&g, "group_destination_hash");
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    let admin = first_admin(
        &server,
        &mut peer,
        &gid,
        &dest,
        "kick,ban,delete,permissions",
        (pb::Rights::Kick as u32) | (pb::Rights::Ban as u32) | (pb::Rights::Delete as u32) | (pb::Rights::Permissions as u32),
    )?;
    let [eve, mal, frank, grace] = ["eve", "mal", "frank", "grace"].map(|n| peer.identity(n));
    let (eve, mal, frank, grace) = (eve?, mal?, frank?, grace?);

    for who in ["eve", "mal", "frank", "grace"] {
        peer.link(who, &dest, Some(who))?;
        assert_eq!(peer.join(who, who)?, pb::JoinState::Joined);
    }
    let spam = post(&mut peer, "mal", "BUY CHEAP STAMPS")?;
    let fine = post(&mut peer, "eve", "good morning")?;

    // Kick: no longer a member, but a public group takes them back.
    peer.request("admin", "/api/v1/members/kick", &pb::KickRequest { identity_hash: raw(&eve)? })?.ok::<pb::Ack>()?;
    assert!(!members(&mut peer, "admin")?.contains(&raw(&eve)?));
    assert!(!peer.info("eve")?.is_member);
    assert_eq!(peer.code("eve", SEND, &pb::SendMessageRequest { content: b"x".to_vec(), ..Default::default() })?, Some(pb::ErrorCode::Forbidden));
    assert_eq!(peer.join("eve", "eve")?, pb::JoinState::Joined);

    // Ban: a reason is required; then no rejoining, posting or reading.
    let no_reason = pb::BanRequest { identity_hash: raw(&mal)?, reason: "  ".into() };
    assert_eq!(peer.code("admin", "/api/v1/members/ban", &no_reason)?, Some(pb::ErrorCode::InvalidArgument));
    let ban = pb::BanRequest { identity_hash: raw(&mal)?, reason: "flooding the channel".into() };
    peer.request("admin", "/api/v1/members/ban", &ban)?.ok::<pb::Ack>()?;
    assert!(!peer.info("mal")?.is_member);
    assert_eq!(peer.code("mal", JOIN, &pb::JoinRequest::default())?, Some(pb::ErrorCode::Forbidden));
    assert_eq!(peer.code("mal", SEND, &pb::SendMessageRequest { content: b"again".to_vec(), ..Default::default() })?, Some(pb::ErrorCode::Forbidden));
    assert_eq!(peer.code("mal", MESSAGES, &pb::MessagesRequest::default())?, Some(pb::ErrorCode::Forbidden));
    let bans: pb::BansResponse = peer.request("admin", "/api/v1/bans", &pb::BansRequest {})?.ok()?;
    assert_eq!(bans.bans.len(), 1);
    assert_eq!(
        (bans.bans[0].identity_hash.clone(), bans.bans[0].reason.as_str(), bans.bans[0].banned_by.as_str()),
        (raw(&mal)?, "flooding the channel", admin.as_str())
    );

    // Delete: the spam comes back as a tombstone, the rest untouched.
    peer.request("admin", "/api/v1/messages/delete", &pb::DeleteMessageRequest { id: spam })?.ok::<pb::Ack>()?;
    let page = latest(&mut peer, "eve")?;
    let tomb = page.iter().find(|m| m.id == spam).ok_or("tombstone missing from history")?;
    assert!(tomb.deleted && tomb.content.is_empty() && tomb.title.is_empty() && tomb.fields.is_empty());
    assert_eq!(tomb.deleted_by, raw(&admin)?);
    assert!(tomb.deleted_at > 0);
    let kept = page.iter().find(|m| m.id == fine).ok_or("message missing")?;
    assert_eq!((kept.deleted, kept.content.as_slice()), (false, &b"good morning"[..]));

    // Unban: listed no more, and may join again.
    peer.request("admin", "/api/v1/members/unban", &pb::UnbanRequest { identity_hash: raw(&mal)? })?.ok::<pb::Ack>()?;
    assert!(peer.request("admin", "/api/v1/bans", &pb::BansRequest {})?.ok::<pb::BansResponse>()?.bans.is_empty());
    assert_eq!(peer.join("mal", "mal")?, pb::JoinState::Joined);

    // Delegation: frank gets the kick right from the admin, kicks grace, but cannot ban or grant.
    let grant = pb::PermissionsRequest { identity_hash: raw(&frank)?, rights: pb::Rights::Kick as u32 };
    peer.request("admin", "/api/v1/members/permissions", &grant)?.ok::<pb::Ack>()?;
    // The admin lacks the approve right, so cannot hand it out.
    let too_much = pb::PermissionsRequest { identity_hash: raw(&frank)?, rights: (pb::Rights::Kick as u32) | (pb::Rights::Approve as u32) };
    assert_eq!(peer.code("admin", "/api/v1/members/permissions", &too_much)?, Some(pb::ErrorCode::Forbidden));
    assert_eq!(peer.info("frank")?.rights, pb::Rights::Kick as u32);
    peer.request("frank", "/api/v1/members/kick", &pb::KickRequest { identity_hash: raw(&grace)? })?.ok::<pb::Ack>()?;
    assert!(!peer.info("grace")?.is_member);
    let frank_ban = pb::BanRequest { identity_hash: raw(&eve)?, reason: "just because".into() };
    assert_eq!(peer.code("frank", "/api/v1/members/ban", &frank_ban)?, Some(pb::ErrorCode::Forbidden));
    let self_grant = pb::PermissionsRequest { identity_hash: raw(&frank)?, rights: (pb::Rights::Kick as u32) | (pb::Rights::Ban as u32) };
    assert_eq!(peer.code("frank", "/api/v1/members/permissions", &self_grant)?, Some(pb::ErrorCode::Forbidden));
    assert!(peer.info("eve")?.is_member);
    Ok(())
}

/// A 32-byte stamp that does not meet `cost` for `challenge` (a random one meets 8 bits 1 time in 256).
fn forged_stamp(challenge: &[u8], cost: u32) -> Vec<u8> {
    let wb = meshgroup::wire::stamp::workblock(challenge, meshgroup::wire::stamp::MESSAGE_ROUNDS);
    loop {
        let s: [u8; 32] = rand::random();
        if meshgroup::wire::stamp::value(&wb, &s) < cost {
            return s.to_vec();
        }
    }
}

fn stamp_error(env: &common::Envelope) -> R<(u32, Vec<u8>)> {
    let e = env.resp.error.as_ref().ok_or("expected STAMP_REQUIRED, got success")?;
    if e.code != pb::ErrorCode::StampRequired as i32 {
        return Err(format!("expected STAMP_REQUIRED, got {:?}: {}", pb::ErrorCode::try_from(e.code), e.message).into());
    }
    Ok((e.stamp_cost, e.challenge.clone()))
}

#[test]
fn join_stamp_cost_set_through_the_api_with_python_lxmf_stamps() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Stamped"])?;
    let gid = g["id"].to_string();
    let dest = s(&g, "group_destination_hash");
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    first_admin(&server, &mut peer, &gid, &dest, "settings", pb::Rights::Settings as u32)?;
    peer.call(json!({"cmd": "watch_announces"}))?;
    peer.identity("sam")?;
    peer.identity("tom")?;

    let mut since = peer.call(json!({"cmd": "heard", "dest": dest, "timeout": 0}))?["total"].as_u64().unwrap_or(0);
    let cost8 = pb::SettingsUpdate { join_stamp_cost: Some(8), ..Default::default() };
    peer.request("admin", "/api/v1/settings/update", &cost8)?.ok::<pb::Ack>()?;
    assert_eq!(peer.info("admin")?.join_stamp_cost, 8);
    let ad = next_announce(&mut peer, &dest, &mut since, |ad| ad.join_stamp_cost == 8)?;
    assert_eq!((ad.name.as_str(), ad.api_version), ("Stamped", 1));

    // Without a stamp: told the cost and given a challenge.
    peer.link("sam", &dest, Some("sam"))?;
    peer.link("tom", &dest, Some("tom"))?;
    assert_eq!(peer.code("sam", "/api/v1/settings/update", &cost8)?, Some(pb::ErrorCode::Forbidden));
    let (cost, challenge) = stamp_error(&peer.request("sam", JOIN, &pb::JoinRequest { display_name: "sam".into(), ..Default::default() })?)?;
    assert_eq!((cost, challenge.len()), (8, 32));

    // A forged stamp over a genuine challenge: refused, with a challenge to try again.
    let forged = pb::JoinRequest { display_name: "sam".into(), challenge: challenge.clone(), stamp: forged_stamp(&challenge, 8), ..Default::default() };
    let (cost, again) = stamp_error(&peer.request("sam", JOIN, &forged)?)?;
    assert_eq!((cost, again.len()), (8, 32));
    assert!(!peer.info("sam")?.is_member);

    // Python LXMF's LXStamper makes the stamp over the challenge.
    let made = peer.call(json!({"cmd": "stamp", "material": hex::encode(&challenge), "cost": 8}))?;
    let stamp = hex::decode(s(&made, "stamp"))?;
    assert!(made["value"].as_u64().unwrap_or(0) >= 8);
    let good = pb::JoinRequest { display_name: "sam".into(), challenge: challenge.clone(), stamp, ..Default::default() };

    // The same valid stamp is worthless to another identity: the challenge is bound to sam.
    let (cost, toms) = stamp_error(&peer.request("tom", JOIN, &good)?)?;
    assert_eq!(cost, 8);
    assert!(toms.len() == 32 && toms != challenge);
    assert!(!peer.info("tom")?.is_member);

    // sam's challenge failed once, so it is spent: even a valid stamp over it is refused.
    let spent = peer.request("sam", JOIN, &good)?;
    assert!(spent.resp.error.as_ref().is_some_and(|e| e.message.contains("already failed")), "{:?}", spent.resp.error);
    assert_eq!(stamp_error(&spent)?.0, 8);
    assert!(!peer.info("sam")?.is_member);
    // A stamp over the fresh challenge from the refusal gets in.
    assert_ne!(again, challenge, "every challenge is new");
    let made = peer.call(json!({"cmd": "stamp", "material": hex::encode(&again), "cost": 8}))?;
    let good = pb::JoinRequest { challenge: again, stamp: hex::decode(s(&made, "stamp"))?, ..good };
    let r: pb::JoinResponse = peer.request("sam", JOIN, &good)?.ok()?;
    assert_eq!(r.state, pb::JoinState::Joined as i32);
    assert!(peer.info("sam")?.is_member);
    // Members pay nothing to ask again.
    assert_eq!(peer.join("sam", "sam")?, pb::JoinState::AlreadyMember);
    Ok(())
}

#[test]
fn notification_mode_and_display_name_updates() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Old Name"])?;
    let gid = g["id"].to_string();
    let dest = s(&g, "group_destination_hash");
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    first_admin(&server, &mut peer, &gid, &dest, "rename", pb::Rights::Rename as u32)?;
    peer.call(json!({"cmd": "watch_announces"}))?;
    peer.identity("nina")?;
    peer.identity("stranger")?;

    peer.link("nina", &dest, Some("nina"))?;
    peer.link("stranger", &dest, Some("stranger"))?;
    assert_eq!(peer.join("nina", "Nina")?, pb::JoinState::Joined);
    assert_eq!(peer.info("nina")?.notify_mode, pb::NotifyMode::NotifyFull as i32);
    for mode in [pb::NotifyMode::NotifyNone, pb::NotifyMode::NotifyShort, pb::NotifyMode::NotifyNone] {
        peer.request("nina", "/api/v1/notifications/update", &pb::NotificationsUpdate { mode: Some(mode as i32), digest: None, text_only: None })?
            .ok::<pb::Ack>()?;
        assert_eq!(peer.info("nina")?.notify_mode, mode as i32);
    }
    let none = pb::NotificationsUpdate { mode: Some(pb::NotifyMode::NotifyNone as i32), digest: None, text_only: None };
    assert_eq!(peer.code("stranger", "/api/v1/notifications/update", &none)?, Some(pb::ErrorCode::Forbidden));

    let rename = pb::DisplayNameUpdate { public_name: Some("New Name".into()), private_name: None };
    assert_eq!(peer.code("nina", "/api/v1/display-name/update", &rename)?, Some(pb::ErrorCode::Forbidden));
    let mut since = peer.call(json!({"cmd": "heard", "dest": dest, "timeout": 0}))?["total"].as_u64().unwrap_or(0);
    peer.request("admin", "/api/v1/display-name/update", &rename)?.ok::<pb::Ack>()?;
    assert_eq!(peer.info("nina")?.name, "New Name");
    assert_eq!(peer.info("stranger")?.name, "New Name");
    let ad = next_announce(&mut peer, &dest, &mut since, |ad| ad.name == "New Name")?;
    assert_eq!(ad.member_count, 2);

    // A private name is for members only; the announce keeps the public one.
    let inner = pb::DisplayNameUpdate { public_name: None, private_name: Some("Inner Circle".into()) };
    peer.request("admin", "/api/v1/display-name/update", &inner)?.ok::<pb::Ack>()?;
    assert_eq!(peer.info("nina")?.name, "Inner Circle");
    assert_eq!(peer.info("stranger")?.name, "New Name");
    Ok(())
}

#[test]
fn latest_fifty_of_a_hundred_thousand_messages_over_a_link() -> R {
    const N: u64 = 100_000;
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Archive"])?;
    let group_id = g["id"].as_i64().ok_or("group id")?;
    let dest = s(&g, "group_destination_hash");
    let poster = "ab".repeat(16);

    // Seeded through the library before the server starts: 100,000 posts through the API would take hours.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let top = rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let rows = (0..N)
            .map(|i| meshgroup::store::NewMessage {
                group_id,
                message_hash: format!("{i:064x}"),
                sender_identity_hash: poster.clone(),
                sender_display_name: String::new(),
                timestamp: 1_700_000_000.0 + i as f64,
                title: Vec::new(),
                content: format!("message {i}").into_bytes(),
                fields: vec![0x80],
                reply_to_id: None,
            })
            .collect();
        let stored = store.insert_messages_bulk(rows).await?;
        let newest = store.history(group_id, meshgroup::store::HistoryQuery { limit: 1, ..Default::default() }).await?;
        Ok::<_, Box<dyn std::error::Error>>((stored, newest.first().map(|m| m.id).ok_or("no messages")?))
    })?;
    let (stored, top) = top;
    assert_eq!(stored, N);
    eprintln!("seeded {N} messages in {:.1} s", started.elapsed().as_secs_f64());
    let base = top - (N as i64 - 1);
    let body = |id: i64| format!("message {}", id - base).into_bytes();

    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    peer.identity("reader")?;
    peer.link("r", &dest, Some("reader"))?;
    assert_eq!(peer.join("r", "reader")?, pb::JoinState::Joined);

    let t0 = Instant::now();
    let env = peer.request("r", MESSAGES, &pb::MessagesRequest { limit: 50, ..Default::default() })?;
    eprintln!("latest 50 ({} bytes) over the link in {:.2} s", env.raw_len, t0.elapsed().as_secs_f64());
    // Far over one link packet: the page travelled as an RNS Resource.
    assert!(env.raw_len > 1000, "{} bytes", env.raw_len);
    let page = env.ok::<pb::MessagesResponse>()?.messages;
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), (top - 49..=top).rev().collect::<Vec<_>>());
    assert!(page.iter().all(|m| m.content == body(m.id) && m.sender_identity_hash == raw(&poster).unwrap_or_default()));

    // Paging back from the last id held.
    let older = history(&mut peer, "r", pb::MessagesRequest { limit: 50, before_id: top - 49, ..Default::default() })?;
    assert_eq!(older.iter().map(|m| m.id).collect::<Vec<_>>(), (top - 99..=top - 50).rev().collect::<Vec<_>>());
    // The very first page of the group, as cheap to reach as the last.
    let oldest = history(&mut peer, "r", pb::MessagesRequest { limit: 50, before_id: base + 50, order: pb::Order::OldestFirst as i32, ..Default::default() })?;
    assert_eq!(oldest.iter().map(|m| m.id).collect::<Vec<_>>(), (base..base + 50).collect::<Vec<_>>());
    assert_eq!(oldest[0].content, b"message 0");
    // Catching up from a held id, oldest first.
    let newer = history(&mut peer, "r", pb::MessagesRequest { after_id: top - 10, order: pb::Order::OldestFirst as i32, ..Default::default() })?;
    assert_eq!(newer.iter().map(|m| m.id).collect::<Vec<_>>(), (top - 9..=top).collect::<Vec<_>>());
    // The default page is 20 and the cap is 200.
    assert_eq!(latest(&mut peer, "r")?.len(), 20);
    assert_eq!(history(&mut peer, "r", pb::MessagesRequest { limit: 5000, ..Default::default() })?.len(), 200);
    Ok(())
}

#[test]
fn bench_history_command_runs_on_a_small_history() -> R {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgroup"))
        .args(["--json", "bench", "history", "--sizes", "60,120", "--iterations", "3"])
        .env_remove("MESHGROUP_TEST_DATABASE_URL")
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let results = v["results"].as_array().ok_or("results")?;
    assert_eq!(results.iter().map(|r| r["messages"].as_u64()).collect::<Vec<_>>(), vec![Some(60), Some(120)]);
    assert_eq!(results[0]["ratio_to_baseline"], json!(1.0));
    assert!(results.iter().all(|r| r["us_per_call"].as_f64().is_some_and(|us| us > 0.0)));
    Ok(())
}

/// Issue 13: a full-speed junk join flood from several identities is held off cheaply (each
/// identity's third failure starts its cooldown), the group's join cost rises and is announced at
/// once, and a legitimate joiner with a valid stamp gets in during the flood at the first try.
#[test]
fn junk_join_flood_is_held_off_and_a_valid_stamp_gets_in() -> R {
    let mut server = Server::new()?;
    for (k, v) in [
        ("LIMITS__STAMP_POOL_CAPACITY", "4"),
        ("STAMPS__MAX_FAILURES", "3"),
        ("STAMPS__POOL_PER_IDENTITY", "1"),
        ("STAMPS__ADAPTIVE_MIN_COST", "0"),
        ("STAMPS__ADAPTIVE_MAX_COST", "6"),
        ("STAMPS__ADAPTIVE_SPIKE_PER_MIN", "30"),
        ("STAMPS__ADAPTIVE_DECAY_SECS", "2"),
    ] {
        server.extra_env.push((format!("MESHGROUP_{k}"), v.into()));
    }
    let g = server.create_group(&["--name", "Besieged", "--join-stamp-cost", "4"])?;
    let (gid, dest) = (g["id"].to_string(), s(&g, "group_destination_hash"));
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "watch_announces"}))?;
    let mut since = 0;

    // Four identities, each keeping four junk joins in flight, for at most 60 s.
    peer.call(json!({"cmd": "junk_flood", "dest": dest, "attackers": 4, "n": 100_000, "secs": 60, "burst": 4, "cost": 4}))?;
    let rate_limited = (pb::ErrorCode::RateLimited as i32).to_string();
    poll_secs(60, "every attacker in its cooldown", || {
        let st = peer.call(json!({"cmd": "junk_status"}))?;
        let attackers = st["attackers"].as_object().cloned().unwrap_or_default();
        Ok((attackers.len() == 4 && attackers.values().all(|a| a["codes"][&rate_limited].as_u64().unwrap_or(0) > 0)).then_some(()))
    })?;
    // The flood raised the join cost to the maximum, announced at once, and the CLI shows it.
    next_announce(&mut peer, &dest, &mut since, |ad| ad.join_stamp_cost == 6)?;
    let shown = server.cli(&["group", "show", &gid])?;
    assert_eq!((shown["join_stamp_cost"].as_u64(), shown["current_join_stamp_cost"].as_u64()), (Some(4), Some(6)), "{shown}");

    // During the flood, a legitimate joiner pays the current cost and gets in at the first try.
    peer.identity("lea")?;
    peer.link("lea", &dest, Some("lea"))?;
    let (cost, challenge) = stamp_error(&peer.request("lea", JOIN, &pb::JoinRequest { display_name: "lea".into(), ..Default::default() })?)?;
    assert_eq!(cost, 6);
    let made = peer.call(json!({"cmd": "stamp", "material": hex::encode(&challenge), "cost": cost}))?;
    let good = pb::JoinRequest { display_name: "lea".into(), challenge, stamp: hex::decode(s(&made, "stamp"))?, ..Default::default() };
    let r: pb::JoinResponse = peer.request("lea", JOIN, &good)?.ok()?;
    assert_eq!(r.state, pb::JoinState::Joined as i32);

    let end = peer.call(json!({"cmd": "junk_stop"}))?;
    let attackers = end["attackers"].as_object().cloned().unwrap_or_default();
    assert!(attackers.values().all(|a| a["stopped"] == json!(true)), "the flood was still on when lea joined: {end}");
    assert!(attackers.values().all(|a| a["codes"].get("0").is_none()), "no junk join got in: {end}");
    let answered: u64 = attackers.values().map(|a| a["answered"].as_u64().unwrap_or(0)).sum();
    let metrics = server.metrics()?;
    let join = |outcome: &str| common::metric_sum(&metrics, "meshgroup_stamps_checked_total", &["purpose=\"join\"", &format!("outcome=\"{outcome}\"")]);
    eprintln!("junk joins answered {answered}; checked on the pool {}; cooldown {}; share {}", join("invalid"), join("cooldown"), join("share"));
    // At most three failures per identity ever reached the pool; everything else was refused unchecked.
    assert!(join("invalid") <= 12.0, "{}", join("invalid"));
    assert!(join("cooldown") + join("challenge_spent") >= 4.0);
    assert_eq!(join("valid"), 1.0);

    // Quiet again: the cost decays back to the group's own, and that is announced too.
    next_announce(&mut peer, &dest, &mut since, |ad| ad.join_stamp_cost == 4)?;
    assert_eq!(server.cli(&["group", "show", &gid])?["current_join_stamp_cost"].as_u64(), Some(4));
    Ok(())
}
