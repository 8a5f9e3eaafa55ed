//! Propagation nodes with a real `lxmd` (lxmf 1.2.1) on a Python hub: posts that members leave for
//! a group while its server is away arrive after the server syncs, and a member who stays offline
//! gets their copy from the node.

mod common;

use std::time::Duration;

use common::{Peer, R, Server, hub_and_node, poll, s, unique};
use serde_json::{Value, json};

fn server_on_hub(hub_port: u16, pn: &str) -> R<Server> {
    let mut server = Server::new()?;
    server.interfaces = Some(format!("[{{type=\"tcp_client\",target=\"127.0.0.1:{hub_port}\"}}]"));
    server.extra_env.extend([
        ("MESHGROUP_PROPAGATION__NODE".to_owned(), pn.to_owned()),
        ("MESHGROUP_PROPAGATION__SYNC_INTERVAL_SECS".to_owned(), "5".to_owned()),
        ("MESHGROUP_FANOUT__PROOF_TIMEOUT_SECS".to_owned(), "3".to_owned()),
        ("MESHGROUP_FANOUT__RETRY_CAP_SECS".to_owned(), "2".to_owned()),
        ("MESHGROUP_FANOUT__MAX_ATTEMPTS".to_owned(), "2".to_owned()),
    ]);
    Ok(server)
}

fn history_contents(server: &Server, group: &Value) -> R<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let q = meshgroup::store::HistoryQuery { limit: 50, ..Default::default() };
        let rows = store.history(group["id"].as_i64().ok_or("id")?, q).await?;
        Ok(rows.into_iter().map(|m| String::from_utf8_lossy(&m.content).into_owned()).collect())
    })
}

#[test]
fn posts_left_on_the_node_while_the_server_was_away_arrive() -> R {
    let (_hub, lxmd, hub_port, pn) = hub_and_node()?;
    let mut server = server_on_hub(hub_port, &pn)?;
    let group = server.create_group(&["--name", "Away"])?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(hub_port)?;
    peer.call(json!({"cmd": "router", "as": "alice"}))?;
    let alice = peer.identity("alice")?;
    server.cli(&["member", "add", &group["id"].to_string(), &alice, "--name", "alice"])?;
    // alice knows the group from an earlier session (its announce), then the server goes away.
    server.start()?;
    peer.call(json!({"cmd": "recall", "dest": lxmf, "timeout": 30}))?;
    server.stop();
    peer.call(json!({"cmd": "use_pn", "as": "alice", "pn": pn}))?;
    let sent =
        peer.call(json!({"cmd": "send", "as": "alice", "dest": lxmf, "content": hex::encode("left on the node"), "method": "propagated", "timeout": 90}))?;
    // SENT (4) is what the reference reports once the propagation node holds the message.
    assert_eq!(sent["state"], 4, "deposited on the node: {sent}\nlxmd log:\n{}", lxmd.log());
    assert!(history_contents(&server, &group)?.is_empty());

    server.start()?;
    let got = poll(Duration::from_secs(60), Duration::from_millis(500), "synced from the node", || {
        let h = history_contents(&server, &group)?;
        Ok((!h.is_empty()).then_some(h))
    })
    .map_err(|e| format!("{e}\nserver log:\n{}", server.log()))?;
    assert_eq!(got, vec!["left on the node".to_owned()]);
    // The counter moves just after the commit that made the post visible: poll, don't race it.
    poll(Duration::from_secs(10), Duration::from_millis(100), "counted as propagated", || {
        Ok(server.metrics()?.contains("method=\"propagated\",outcome=\"accepted\"").then_some(()))
    })?;
    Ok(())
}

#[test]
fn an_offline_member_gets_their_copy_from_the_node() -> R {
    let (_hub, _lxmd, hub_port, pn) = hub_and_node()?;
    let mut server = server_on_hub(hub_port, &pn)?;
    let group = server.create_group(&["--name", "Offline"])?;
    let lxmf = s(&group, "lxmf_destination_hash");
    server.start()?;
    poll(Duration::from_secs(60), Duration::from_millis(500), "the server reaches the node", || {
        Ok(server.metrics()?.contains("meshgroup_propagation_syncs_total{outcome=\"ok\"}").then_some(()))
    })?;

    // bob joins (the server learns his key), then goes offline.
    let bob_storage = std::env::temp_dir().join(unique("bob")?);
    let mut bob = Peer::connect(hub_port)?;
    bob.call(json!({"cmd": "router", "as": "bob", "storage": bob_storage}))?;
    let bob_key = bob.call(json!({"cmd": "identity_key", "name": "bob"}))?;
    bob.link("j", &s(&group, "group_destination_hash"), Some("bob"))?;
    bob.request("j", "/api/v1/join", &meshgroup::wire::proto::JoinRequest::default())?.ok::<meshgroup::wire::proto::JoinResponse>()?;
    drop(bob);

    let mut alice = Peer::connect(hub_port)?;
    alice.call(json!({"cmd": "router", "as": "alice"}))?;
    alice.link("j", &s(&group, "group_destination_hash"), Some("alice"))?;
    alice.request("j", "/api/v1/join", &meshgroup::wire::proto::JoinRequest::default())?.ok::<meshgroup::wire::proto::JoinResponse>()?;
    assert_eq!(alice.call(json!({"cmd": "send", "as": "alice", "dest": lxmf, "content": hex::encode("while you were out")}))?["delivered"], true);

    // The fan-out gives up on bob after two attempts and deposits his copy on the node.
    poll(Duration::from_secs(90), Duration::from_millis(500), "deposited for bob", || {
        Ok(server.metrics()?.contains("method=\"propagated\",outcome=\"propagated\"").then_some(()))
    })
    .map_err(|e| format!("{e}\nserver log:\n{}", server.log()))?;

    // bob comes back with the same identity and syncs from the node.
    let mut back = Peer::connect(hub_port)?;
    back.call(json!({"cmd": "identity_set", "name": "bob", "private_key": s(&bob_key, "private_key")}))?;
    back.call(json!({"cmd": "router", "as": "bob", "storage": bob_storage}))?;
    back.call(json!({"cmd": "use_pn", "as": "bob", "pn": pn}))?;
    // A returning client still knows the group's identity (RNS keeps known destinations).
    back.call(json!({"cmd": "recall", "dest": lxmf, "timeout": 30}))?;
    let synced = back.call(json!({"cmd": "sync_pn", "as": "bob", "timeout": 60}))?;
    assert_eq!(synced["complete"], true, "{synced}");
    let inbox = back.call(json!({"cmd": "inbox", "as": "bob", "count": 1, "timeout": 20}))?;
    let _ = std::fs::remove_dir_all(&bob_storage);
    let texts: Vec<String> = inbox["messages"]
        .as_array()
        .map(|a| a.iter().map(|m| String::from_utf8_lossy(&hex::decode(s(m, "content")).unwrap_or_default()).into_owned()).collect())
        .unwrap_or_default();
    let i = texts.iter().position(|t| t.ends_with(": while you were out")).ok_or(format!("bob's messages from the node: {texts:?}"))?;
    let msg = &inbox["messages"][i];
    assert_eq!(s(msg, "source"), lxmf);
    assert_eq!(msg["signature_validated"], true);
    Ok(())
}
