//! The `meshchat.group` link API against real Python RNS peers (rns 1.5.7) over TCP on loopback.

mod common;

use common::{Peer, R, Server, poll_secs, s};
use meshgroup::wire::proto as pb;
use serde_json::json;

#[test]
fn announce_and_info_for_public_and_private_groups() -> R {
    let mut server = Server::new()?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    // Created while the server runs (and the peer listens): picked up, registered and announced.
    // One at a time, since a burst of announces on a new interface is held back by the receiver.
    let public = server.create_group(&["--name", "Mesh Friends", "--join-stamp-cost", "8", "--post-stamp-cost", "6"])?;
    let heard = peer.call(json!({"cmd": "recall", "dest": s(&public, "group_destination_hash"), "wait_announce": true, "timeout": 45}))?;
    assert_eq!(s(&heard, "identity_hash"), s(&public, "identity_hash"), "RNS.Identity.recall gives the group identity");
    let ad = meshgroup::wire::announce::decode_group_announce(hex::decode(s(&heard, "app_data"))?.as_slice())?;
    assert_eq!((ad.name.as_str(), ad.join_stamp_cost, ad.post_stamp_cost, ad.api_version), ("Mesh Friends", 8, 6, 1));
    assert_eq!(hex::encode(&ad.lxmf_destination), s(&public, "lxmf_destination_hash"));

    let private = server.create_group(&["--name", "Cover Name", "--private", "--private-name", "Cottle Family Chat"])?;
    let heard_private = peer.call(json!({"cmd": "recall", "dest": s(&private, "group_destination_hash"), "wait_announce": true, "timeout": 45}))?;
    let ad = meshgroup::wire::announce::decode_group_announce(hex::decode(s(&heard_private, "app_data"))?.as_slice())?;
    assert_eq!(ad.name, "Private Group", "a private group's name is not announced");
    assert_eq!(ad.visibility, pb::Visibility::Private as i32);

    // The lxmf.delivery announce is what stock LXMF clients read: [name, post cost].
    let lx = peer.call(json!({"cmd": "recall", "dest": s(&public, "lxmf_destination_hash")}))?;
    assert_eq!(s(&lx, "app_data"), hex::encode(meshgroup::wire::lxmf::delivery_announce("Mesh Friends", 6)));

    // Info on the public group, identified.
    let alice = peer.identity("alice")?;
    peer.link("pub", &s(&public, "group_destination_hash"), Some("alice"))?;
    let info: pb::InfoResponse = peer.request("pub", "/api/v1/info", &pb::InfoRequest {})?.ok()?;
    assert_eq!(info.name, "Mesh Friends");
    assert_eq!((info.join_stamp_cost, info.post_stamp_cost, info.is_member), (8, 6, false));
    assert_eq!(info.server_version, env!("CARGO_PKG_VERSION"));
    assert!(info.privacy_notice.contains("can be seen, saved and shared"));

    // Private group: a stranger sees only "Private Group"; a member sees the real name.
    peer.identity("bob")?;
    peer.link("priv-bob", &s(&private, "group_destination_hash"), Some("bob"))?;
    let info: pb::InfoResponse = peer.request("priv-bob", "/api/v1/info", &pb::InfoRequest {})?.ok()?;
    assert_eq!(info.name, "Private Group");
    server.cli(&["member", "add", &private["id"].to_string(), &alice, "--name", "alice"])?;
    // The CLI changes the running group actor through the admin socket before it returns.
    peer.link("priv-alice", &s(&private, "group_destination_hash"), Some("alice"))?;
    let info = poll_secs(10, "alice to be a member", || Ok(Some(peer.info("priv-alice")?).filter(|i| i.is_member)))?;
    assert_eq!(info.name, "Cottle Family Chat");
    Ok(())
}

#[test]
fn bad_input_gets_typed_errors_and_the_server_keeps_serving() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Sturdy"])?;
    let doomed = server.create_group(&["--name", "Doomed"])?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    let dest = s(&g, "group_destination_hash");

    // Before identify: info works, paths that need an identity say so.
    peer.link("anon", &dest, None)?;
    peer.request("anon", "/api/v1/info", &pb::InfoRequest {})?.ok::<pb::InfoResponse>()?;
    let r = peer.request("anon", "/api/v1/join", &pb::JoinRequest::default())?;
    assert_eq!(r.code(), Some(pb::ErrorCode::Unauthenticated));

    peer.identity("carol")?;
    peer.link("l", &dest, Some("carol"))?;
    // Undecodable body.
    let r = peer.request_raw("l", "/api/v1/members/kick", &[0xff, 0xff, 0xff, 0x01])?;
    assert_eq!(r.code(), Some(pb::ErrorCode::InvalidArgument));
    // Unknown path.
    let r = peer.request_raw("l", "/api/v1/nope", b"")?;
    assert_eq!(r.code(), Some(pb::ErrorCode::NotFound));
    // Oversized body (the limit is 64 KiB); it travels as a Resource.
    let big = pb::SendMessageRequest { content: vec![b'x'; 70_000], ..Default::default() };
    let r = peer.request("l", "/api/v1/messages/send", &big)?;
    assert_eq!(r.code(), Some(pb::ErrorCode::InvalidArgument));
    // Missing permission.
    let r = peer.request("l", "/api/v1/members/kick", &pb::KickRequest { identity_hash: vec![1; 16] })?;
    assert_eq!(r.code(), Some(pb::ErrorCode::Forbidden));
    // A wrong-length hash.
    let r = peer.request("l", "/api/v1/members/ban", &pb::BanRequest { identity_hash: vec![1; 3], reason: "x".into() })?;
    assert_eq!(r.code(), Some(pb::ErrorCode::InvalidArgument));

    // A link to a group that is deleted while the link is open.
    peer.link("doomed", &s(&doomed, "group_destination_hash"), Some("carol"))?;
    server.cli(&["group", "delete", &doomed["id"].to_string()])?;
    poll_secs(10, "the deleted group to answer NOT_FOUND", || {
        Ok((peer.code("doomed", "/api/v1/info", &pb::InfoRequest {})? == Some(pb::ErrorCode::NotFound)).then_some(()))
    })?;

    // And everyone else is still served.
    let mut other = Peer::connect(server.rns_port)?;
    other.identity("dave")?;
    other.link("l", &dest, Some("dave"))?;
    let joined: pb::JoinResponse = other.request("l", "/api/v1/join", &pb::JoinRequest { display_name: "dave".into(), ..Default::default() })?.ok()?;
    assert_eq!(joined.state, pb::JoinState::Joined as i32);

    let metrics = server.metrics()?;
    for needle in ["outcome=\"invalid_argument\"", "outcome=\"not_found\"", "outcome=\"unauthenticated\"", "outcome=\"forbidden\""] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    Ok(())
}

#[test]
fn per_group_labels_only_when_the_operator_asks() -> R {
    for per_group in [false, true] {
        let mut server = Server::new()?;
        server.extra_env.push(("MESHGROUP_METRICS__PER_GROUP".into(), per_group.to_string()));
        let g = server.create_group(&["--name", "Labelled"])?;
        server.start()?;
        let mut peer = Peer::connect(server.rns_port)?;
        peer.identity("erin")?;
        peer.link("l", &s(&g, "group_destination_hash"), Some("erin"))?;
        peer.request("l", "/api/v1/info", &pb::InfoRequest {})?.ok::<pb::InfoResponse>()?;
        let metrics = server.metrics()?;
        let labelled = metrics.lines().any(|l| l.starts_with("meshgroup_requests_total") && l.contains(&format!("group=\"{}\"", g["id"])));
        assert_eq!(labelled, per_group, "group label present = {labelled} with per_group = {per_group}");
        assert!(!metrics.contains(&peer.identity("erin")?), "no metric names a member");
    }
    Ok(())
}

#[test]
fn without_its_admin_socket_the_server_follows_cli_changes_through_the_store() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Socketless", "--private"])?;
    // A directory where the socket goes: the server cannot bind it, and the CLI finds no server.
    std::fs::create_dir_all(server.dir.join("admin.sock"))?;
    server.start()?;
    poll_secs(10, "the fallback poll to start", || Ok(server.log().contains("polling the store").then_some(())))?;
    let mut peer = Peer::connect(server.rns_port)?;
    let alice = peer.identity("alice")?;
    peer.link("alice", &s(&g, "group_destination_hash"), Some("alice"))?;
    assert!(!peer.info("alice")?.is_member);
    server.cli(&["member", "add", &g["id"].to_string(), &alice, "--name", "alice"])?;
    let info = poll_secs(10, "alice to be a member", || Ok(Some(peer.info("alice")?).filter(|i| i.is_member)))?;
    assert_eq!(info.name, "Socketless");
    Ok(())
}
