//! LXMF for hosted groups against stock Python `LXMRouter`s (lxmf 1.2.1): posting, delivery proofs,
//! the fan-out to other members with attribution, and group rules on inbound.

mod common;

use common::{Peer, R, Server, s};
use meshgroup::wire::proto as pb;
use serde_json::{Value, json};

/// Joins `name` to the group over the link API (so membership is immediate).
fn join(peer: &mut Peer, group: &Value, name: &str) -> R {
    peer.link(&format!("join-{name}"), &s(group, "group_destination_hash"), Some(name))?;
    let r: pb::JoinResponse = peer
        .request(&format!("join-{name}"), "/api/v1/join", &pb::JoinRequest { display_name: name.into(), ..Default::default() })?
        .ok()?;
    assert_eq!(r.state, pb::JoinState::Joined as i32);
    Ok(())
}

fn history(peer: &mut Peer, link: &str) -> R<Vec<pb::GroupMessage>> {
    let r: pb::MessagesResponse = peer.request(link, "/api/v1/messages", &pb::MessagesRequest { limit: 50, ..Default::default() })?.ok()?;
    Ok(r.messages)
}

#[test]
fn stock_client_posts_and_members_receive_with_attribution() -> R {
    let mut server = Server::new()?;
    let group = server.create_group(&["--name", "Radio Club"])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "router", "as": "alice"}))?;
    peer.call(json!({"cmd": "router", "as": "bob"}))?;
    join(&mut peer, &group, "alice")?;
    join(&mut peer, &group, "bob")?;

    // Opportunistic post: stored, proven (DELIVERED), relayed to bob from the group identity.
    let sent = peer.call(json!({"cmd": "send", "as": "alice", "dest": lxmf, "content": hex::encode("hello mesh"), "method": "opportunistic"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let inbox = peer.call(json!({"cmd": "inbox", "as": "bob", "count": 1}))?;
    let got = &inbox["messages"][0];
    assert_eq!(s(got, "source"), lxmf, "relayed from the group's lxmf.delivery");
    assert_eq!(got["signature_validated"], true);
    assert_eq!(String::from_utf8(hex::decode(s(got, "content"))?)?, "alice: hello mesh");
    let fields = got["fields"].to_string();
    assert!(fields.contains("meshgroup.v1") && fields.contains("251") && fields.contains("253"), "attribution fields: {fields}");
    let stored = history(&mut peer, "join-alice")?;
    assert_eq!(stored.len(), 1);
    assert_eq!(hex::encode(&stored[0].sender_identity_hash), peer.identity("alice")?);
    assert_eq!(stored[0].content, b"hello mesh");

    // Direct with a 3 KB body (a Resource over a link): stored and DELIVERED; bob gets the short notice.
    let big = "x".repeat(3000);
    let sent = peer.call(json!({"cmd": "send", "as": "alice", "dest": lxmf, "content": hex::encode(&big), "method": "direct"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let inbox = peer.call(json!({"cmd": "inbox", "as": "bob", "count": 2}))?;
    let short = String::from_utf8(hex::decode(s(&inbox["messages"][1], "content"))?)?;
    assert!(short.starts_with("[Radio Club] alice: xxx") && short.contains("/history"), "{short}");
    let stored = history(&mut peer, "join-alice")?;
    assert_eq!(stored[0].content.len(), 3000);
    Ok(())
}

/// The group's history as stored (read with the library, like an operator would).
fn stored_count(server: &Server, group: &Value) -> R<usize> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let q = meshgroup::store::HistoryQuery { limit: 100, ..Default::default() };
        Ok(store.history(group["id"].as_i64().ok_or("id")?, q).await?.len())
    })
}

#[test]
fn strangers_and_banned_members_are_not_stored() -> R {
    let mut server = Server::new()?;
    let group = server.create_group(&["--name", "Closed", "--private"])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "router", "as": "mallory"}))?;
    let mallory = peer.identity("mallory")?;
    let sent = peer.call(json!({"cmd": "send", "as": "mallory", "dest": lxmf, "content": hex::encode("let me in"), "timeout": 12}))?;
    assert_ne!(sent["delivered"], true, "a stranger's post is not acknowledged");
    assert_eq!(stored_count(&server, &group)?, 0);

    // A member who is then banned: their post is refused and counted.
    let id = group["id"].to_string();
    server.cli(&["member", "add", &id, &mallory])?;
    server.cli(&["ban", "add", &id, &mallory, "--reason", "spam"])?;
    let sent = peer.call(json!({"cmd": "send", "as": "mallory", "dest": lxmf, "content": hex::encode("still here"), "timeout": 12}))?;
    assert_ne!(sent["delivered"], true);
    assert_eq!(stored_count(&server, &group)?, 0);
    let metrics = server.metrics()?;
    assert!(metrics.contains("outcome=\"not_member\""), "stranger counted");
    assert!(metrics.contains("outcome=\"banned\""), "ban counted");
    Ok(())
}
