//! Threads across the relay against three stock Python `LXMRouter`s (lxmf 1.2.1), Alice, Bob and
//! Carol: each member's copy has its own LXMF hash, and a reply or reaction to any copy reaches
//! each member naming the copy they hold (the author: her original), across a server restart.

mod common;

use common::{Peer, R, Server, poll_secs, s};
use meshgroup::wire::proto as pb;
use serde_json::{Value, json};

/// Joins `name` over the link API (membership is immediate); the link stays open as `join-NAME`.
fn join(peer: &mut Peer, group: &Value, name: &str) -> R {
    peer.link(&format!("join-{name}"), &s(group, "group_destination_hash"), Some(name))?;
    assert_eq!(peer.join(&format!("join-{name}"), name)?, pb::JoinState::Joined);
    Ok(())
}

/// A running server with one public group named `name`, its LXMF destination hash, and one peer
/// whose stock routers Alice, Bob and Carol have joined it.
fn three_members(name: &str) -> R<(Server, Value, String, Peer)> {
    let mut server = Server::new()?;
    let group = server.create_group(&["--name", name])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    for who in ["alice", "bob", "carol"] {
        peer.call(json!({"cmd": "router", "as": who}))?;
        join(&mut peer, &group, who)?;
    }
    Ok((server, group, lxmf, peer))
}

/// The `n`-th message router `who` received (waiting for it), as `inbox_fields` reports it.
fn received(peer: &mut Peer, who: &str, n: usize) -> R<Value> {
    let inbox = peer.call(json!({"cmd": "inbox_fields", "as": who, "count": n + 1, "timeout": 60}))?;
    let got = inbox["messages"].get(n).cloned().ok_or_else(|| format!("{who} got no message #{n}: {inbox}"))?;
    Ok(got)
}

fn field_hex(msg: &Value, path: &[&str]) -> String {
    let mut v = &msg["fields"];
    for p in path {
        v = &v[*p];
    }
    v["hex"].as_str().unwrap_or_default().to_owned()
}

fn history(peer: &mut Peer, link: &str) -> R<Vec<pb::GroupMessage>> {
    let r: pb::MessagesResponse =
        peer.request(link, "/api/v1/messages", &pb::MessagesRequest { limit: 50, order: pb::Order::OldestFirst as i32, ..Default::default() })?.ok()?;
    Ok(r.messages)
}

#[test]
fn replies_and_reactions_name_each_members_own_copy_across_a_restart() -> R {
    let (mut server, group, lxmf, mut peer) = three_members("Threads")?;

    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "content": "who is on the air tonight?"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let original = s(&sent, "hash");
    let (bob_copy, carol_copy) = (s(&received(&mut peer, "bob", 0)?, "hash"), s(&received(&mut peer, "carol", 0)?, "hash"));
    assert!(original != bob_copy && bob_copy != carol_copy && original != carol_copy, "each member's copy has its own hash");

    // The mapping is in the database: a restart between the post and the reply loses nothing.
    server.terminate()?;
    server.start()?;
    // The links died with the server: new ones for the API, once the peer has reconnected (a
    // link request sent while its interface was down is lost, so each attempt is bounded).
    for who in ["alice", "bob"] {
        let dest = s(&group, "group_destination_hash");
        poll_secs(90, "a link after the restart", || {
            Ok(peer.call(json!({"cmd": "link", "link": who, "dest": dest, "as": who, "timeout": 8})).ok().map(|_| ()))
        })?;
    }

    let sent = peer.call(
        json!({"cmd": "send_threaded", "as": "bob", "dest": lxmf, "content": "me, on 2m", "reply_to": bob_copy, "quote": "who is on the air tonight?"}),
    )?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let to_alice = received(&mut peer, "alice", 0)?;
    let to_carol = received(&mut peer, "carol", 1)?;
    assert_eq!(field_hex(&to_alice, &["48"]), original, "Alice's copy of the reply names her original: {to_alice}");
    assert_eq!(field_hex(&to_carol, &["48"]), carol_copy, "Carol's names her own copy: {to_carol}");
    assert_eq!(field_hex(&to_carol, &["49"]), hex::encode("who is on the air tonight?"), "the quote travels as sent");
    let reply_copy_for_carol = s(&to_carol, "hash");

    // Carol reacts to her copy: Alice hears it on her original, Bob on his copy; Carol is not echoed.
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "carol", "dest": lxmf, "react_to": carol_copy, "emoji": "👍"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let r_alice = received(&mut peer, "alice", 1)?;
    let r_bob = received(&mut peer, "bob", 1)?;
    assert_eq!(field_hex(&r_alice, &["64", "0"]), original, "{r_alice}");
    assert_eq!(field_hex(&r_bob, &["64", "0"]), bob_copy, "{r_bob}");
    assert_eq!(field_hex(&r_bob, &["64", "1"]), hex::encode("👍"));

    // History: the reply points at the post by id, the post holds one 👍, and no reaction is a chat line.
    let h = history(&mut peer, "alice")?;
    assert_eq!(h.len(), 2, "two chat lines: {h:?}");
    assert_eq!(h[1].reply_to_id, h[0].id);
    assert_eq!(h[0].reactions, vec![pb::ReactionCount { emoji: "👍".into(), count: 1 }]);

    // A reaction to a copy of the reply resolves too; the API removes one; a cap holds.
    let ack = peer.request("bob", "/api/v1/messages/react", &pb::ReactRequest { id: h[0].id, emoji: "🎉".into(), remove: false })?;
    ack.ok::<pb::Ack>()?;
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "react_to": reply_copy_for_carol, "emoji": "📻"}))?;
    assert_eq!(sent["delivered"], true);
    let h = poll_secs(20, "the reaction to the reply", || {
        let h = history(&mut peer, "alice")?;
        Ok((h[1].reactions.len() == 1).then_some(h))
    })?;
    assert_eq!(h[0].reactions.len(), 2, "{:?}", h[0].reactions);
    peer.request("bob", "/api/v1/messages/react", &pb::ReactRequest { id: h[0].id, emoji: "🎉".into(), remove: true })?.ok::<pb::Ack>()?;
    let code = peer.code("bob", "/api/v1/messages/react", &pb::ReactRequest { id: h[0].id, emoji: "🎉".into(), remove: true })?;
    assert_eq!(code, Some(pb::ErrorCode::NotFound), "removing a reaction one does not hold");
    for e in ["a", "b", "c"] {
        peer.request("bob", "/api/v1/messages/react", &pb::ReactRequest { id: h[0].id, emoji: e.into(), remove: false })?.ok::<pb::Ack>()?;
    }
    let code = peer.code("bob", "/api/v1/messages/react", &pb::ReactRequest { id: h[0].id, emoji: "d".into(), remove: false })?;
    assert_eq!(code, Some(pb::ErrorCode::InvalidArgument), "a fourth reaction of one member on one message");
    let code = peer.code("bob", "/api/v1/messages/react", &pb::ReactRequest { id: h[0].id, emoji: "x".repeat(40), remove: false })?;
    assert_eq!(code, Some(pb::ErrorCode::InvalidArgument), "a reaction is not a message");
    // A malformed reaction over LXMF (its target is no message hash) is refused, unproven, and
    // its sender told why; one to a message the group never had is proven and answered.
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "react_to": "ab".repeat(16), "emoji": "👍", "timeout": 5}))?;
    assert_eq!(sent["delivered"], false, "{sent}");
    let told =
        peer.call(json!({"cmd": "inbox", "as": "alice", "contains": "Reaction refused: payload has the wrong shape: reaction target", "timeout": 30}))?;
    assert!(told["messages"].to_string().contains(&hex::encode("Reaction refused")), "{told}");
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "react_to": "cd".repeat(32), "emoji": "👍"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let told = peer.call(json!({"cmd": "inbox", "as": "alice", "contains": "Reaction refused: message not found", "timeout": 30}))?;
    assert!(told["messages"].to_string().contains(&hex::encode("Reaction refused: message not found")), "{told}");
    Ok(())
}

/// The text of a received message.
fn text(msg: &Value) -> String {
    String::from_utf8_lossy(&hex::decode(s(msg, "content")).unwrap_or_default()).into_owned()
}

#[test]
fn text_only_members_get_the_text_and_fetch_the_image_and_oversized_or_disallowed_attachments_are_refused() -> R {
    let (server, group, lxmf, mut peer) = three_members("Pictures")?;
    // Bob is on LoRa: text-only, set with the stock client's text command.
    peer.call(json!({"cmd": "send", "as": "bob", "dest": lxmf, "content": hex::encode("/notify textonly on")}))?;
    let said = received(&mut peer, "bob", 0)?;
    assert!(text(&said).starts_with("Text only: posts come without"), "{said}");

    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "content": "the antenna", "image_len": 3000, "method": "direct"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let to_carol = received(&mut peer, "carol", 0)?;
    assert_eq!(to_carol["fields"]["6"][0], "webp", "Carol (full) gets the image: {to_carol}");
    assert_eq!(to_carol["fields"]["6"][1]["hex"].as_str().map(str::len), Some(6000));
    let to_bob = received(&mut peer, "bob", 1)?;
    assert!(to_bob["fields"].get("6").is_none(), "Bob gets no image: {to_bob}");
    let line = text(&to_bob);
    assert!(line.starts_with("alice: the antenna\n[images (2.9 KB) left out: text-only."), "{line}");

    // He fetches it over the link API (a Resource: larger than a link packet).
    let id = h_last_id(&mut peer, "join-bob")?;
    assert!(line.ends_with(&format!("id {id}]")), "{line}");
    let got: pb::AttachmentsResponse = peer.request("join-bob", "/api/v1/messages/attachment", &pb::AttachmentRequest { id })?.ok()?;
    assert_eq!(got.attachments.len(), 1);
    assert_eq!((got.attachments[0].field, got.attachments[0].name.as_str(), got.attachments[0].data.len()), (6, "webp", 3000));
    assert_eq!(got.attachments[0].data[..256], (0..=255u8).collect::<Vec<_>>()[..]);

    // Over the default 32 KB: refused, Alice is told why, nothing is stored.
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "content": "the big one", "image_len": 40_000, "method": "direct"}))?;
    assert_eq!(sent["delivered"], true, "proven, so the client does not send it again: {sent}");
    let why = received(&mut peer, "alice", 0)?;
    assert!(text(&why).contains("Not posted: invalid argument: attachments of 39.1 KB are over this group's limit of 32.0 KB"), "{why}");
    // A kind the group does not take (set while the server runs): refused too.
    server.cli(&["group", "update", &group["id"].to_string(), "--attachment-kinds", "image"])?;
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": lxmf, "content": "listen", "audio_len": 100}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let why = received(&mut peer, "alice", 1)?;
    assert!(text(&why).contains("audio not allowed in this group"), "{why}");
    assert_eq!(h_last_id(&mut peer, "join-bob")?, id, "neither refused post is in the history");
    let code = peer.code("join-bob", "/api/v1/messages/attachment", &pb::AttachmentRequest { id: id + 100 })?;
    assert_eq!(code, Some(pb::ErrorCode::NotFound));
    Ok(())
}

fn h_last_id(peer: &mut Peer, link: &str) -> R<i64> {
    Ok(history(peer, link)?.last().map(|m| m.id).unwrap_or(0))
}

#[test]
fn a_deleted_message_is_not_sent_to_members_whose_copy_is_still_queued() -> R {
    let mut server = Server::new()?;
    // Paced at 2 copies a second, so the deletion lands mid-fan-out.
    server.extra_env = vec![("MESHGROUP_FANOUT__RATE_PER_SEC".into(), "2".into()), ("MESHGROUP_FANOUT__BURST".into(), "1".into())];
    let group = server.create_group(&["--name", "Oops"])?;
    server.start()?;
    let gid = group["id"].to_string();
    let mut peer = Peer::connect(server.rns_port)?;
    let members: Vec<String> = peer.call(json!({"cmd": "members", "n": 10, "pace": 0.3}))?["members"]
        .as_array()
        .ok_or("members")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for m in &members {
        server.cli(&["member", "add", &gid, m])?;
    }
    peer.call(json!({"cmd": "router", "as": "alice"}))?;
    join(&mut peer, &group, "alice")?;
    let sent = peer.call(json!({"cmd": "send_threaded", "as": "alice", "dest": s(&group, "lxmf_destination_hash"), "content": "wrong group, sorry"}))?;
    assert_eq!(sent["delivered"], true);
    let holders = |peer: &mut Peer| -> R<usize> {
        let inbox = peer.call(json!({"cmd": "member_inbox", "unique": 1, "timeout": 0}))?;
        Ok(inbox["members"].as_object().ok_or("inbox")?.values().filter(|got| got.as_array().is_some_and(|a| !a.is_empty())).count())
    };
    poll_secs(30, "the first copy", || Ok((holders(&mut peer)? > 0).then_some(())))?;
    let id = h_last_id(&mut peer, "join-alice")?;
    peer.request("join-alice", "/api/v1/messages/delete", &pb::DeleteMessageRequest { id })?.ok::<pb::Ack>()?;

    // Once no copy is owed any more, nothing else can go out.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = rt.block_on(meshgroup::store::Store::open(&server.db_url))?;
    let expired = poll_secs(30, "the queued copies stopped", || {
        let depth = rt.block_on(store.outbox_depth())?;
        let owed: i64 = depth.iter().filter(|(state, _, _)| state == "pending" || state == "sent").map(|(_, _, n)| n).sum();
        Ok((owed == 0).then(|| depth.iter().filter(|(state, _, _)| state == "expired").map(|(_, _, n)| *n).sum::<i64>()))
    })?;
    let got = holders(&mut peer)?;
    eprintln!("{got} of 10 members got the message before it was deleted; {expired} queued copies were stopped");
    assert!(got < members.len(), "the deletion stopped the fan-out ({got} got it)");
    assert!(expired as usize >= members.len() - got, "every copy not sent was stopped ({expired} expired)");
    assert!(server.log().contains("queued copies of a deleted message stopped"), "{}", server.log());
    Ok(())
}
