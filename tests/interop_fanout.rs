//! The fan-out against real Python LXMF members: all three modes and notices, a SIGKILL in the
//! middle of a fan-out, and pacing measured on the wire.

mod common;

use std::collections::{HashMap, HashSet};

use common::{Peer, R, Server, s};
use meshgroup::wire::proto as pb;
use serde_json::{Value, json};

/// Adds members with the library (as an operator's bulk import would) and bumps the group's
/// `updated_at`, which a running server picks up within a second.
fn add_members(server: &Server, group: &Value, members: &[String], mode: &str) -> R {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let gid = group["id"].as_i64().ok_or("id")?;
        for (i, m) in members.iter().enumerate() {
            store.add_member(gid, m, &format!("m{i}"), 0, mode).await?;
        }
        store.update_group(gid, meshgroup::store::GroupPatch::default()).await?;
        Ok(())
    })
}

/// Waits until the running server counts `n` members in the group (it reloads after the bump).
fn wait_members(peer: &mut Peer, group: &Value, n: u32) -> R {
    peer.link("watch", &s(group, "group_destination_hash"), None)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info: pb::InfoResponse = peer.request("watch", "/api/v1/info", &pb::InfoRequest {})?.ok()?;
        if info.member_count >= n {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("server sees {} members, not {n}", info.member_count).into());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn members_of(v: &Value) -> Vec<String> {
    v["members"].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Per member: distinct message hashes received, and total receptions.
fn receipts(inbox: &Value) -> HashMap<String, (HashSet<String>, usize, Vec<f64>)> {
    let mut out = HashMap::new();
    if let Some(m) = inbox["members"].as_object() {
        for (h, got) in m {
            let list = got.as_array().cloned().unwrap_or_default();
            let hashes = list.iter().map(|g| s(g, "hash")).collect();
            let times = list.iter().filter_map(|g| g["t"].as_f64()).collect();
            out.insert(h.clone(), (hashes, list.len(), times));
        }
    }
    out
}

#[test]
fn sigkill_mid_fanout_loses_nothing_and_duplicates_nothing() -> R {
    let mut server = Server::new()?;
    server.extra_env = vec![
        ("MESHGROUP_FANOUT__RATE_PER_SEC".into(), "15".into()),
        ("MESHGROUP_FANOUT__BURST".into(), "1".into()),
        ("MESHGROUP_FANOUT__PROOF_TIMEOUT_SECS".into(), "3".into()),
        ("MESHGROUP_FANOUT__RETRY_CAP_SECS".into(), "2".into()),
    ];
    let group = server.create_group(&["--name", "Crash Test"])?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    let members = members_of(&peer.call(json!({"cmd": "members", "n": 40, "pace": 0.6}))?);
    peer.call(json!({"cmd": "router", "as": "poster"}))?;
    let poster = peer.identity("poster")?;
    let mut all = members.clone();
    all.push(poster.clone());
    add_members(&server, &group, &all, "full")?;
    wait_members(&mut peer, &group, all.len() as u32)?;

    let lxmf = s(&group, "lxmf_destination_hash");
    let sent = peer.call(json!({"cmd": "send", "as": "poster", "dest": lxmf, "content": hex::encode("one copy each")}))?;
    assert_eq!(sent["delivered"], true);
    // Kill the server while the paced fan-out (40 members at 15/s) is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = receipts(&peer.call(json!({"cmd": "member_inbox", "unique": 1, "timeout": 0}))?);
        let reached = got.values().filter(|(h, _, _)| !h.is_empty()).count();
        if reached >= 10 || std::time::Instant::now() > deadline {
            assert!(reached < members.len(), "the kill must land mid-fan-out ({reached} reached)");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.kill9();
    server.start()?;
    let inbox = peer.call(json!({"cmd": "member_inbox", "unique": 1, "timeout": 90}))?;
    let got = receipts(&inbox);
    let mut resent = 0;
    for m in &members {
        let (hashes, total, _) = got.get(m).ok_or("member missing")?;
        assert_eq!(hashes.len(), 1, "member {m} holds exactly one copy (message ids {hashes:?})");
        resent += total - 1;
    }
    eprintln!("every member has exactly one copy; {resent} packet-level resends were de-duplicated by message id");
    Ok(())
}

#[test]
fn modes_notices_and_pacing_on_the_wire() -> R {
    let mut server = Server::new()?;
    let rate = 5.0;
    server.extra_env = vec![("MESHGROUP_FANOUT__RATE_PER_SEC".into(), rate.to_string()), ("MESHGROUP_FANOUT__BURST".into(), "2".into())];
    let group = server.create_group(&["--name", "Modes"])?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    // Announces are paced like a real network's (under 2/s): a burst on a new interface is held back.
    let full = members_of(&peer.call(json!({"cmd": "members", "n": 12, "pace": 0.6}))?);
    let short = members_of(&peer.call(json!({"cmd": "members", "n": 4, "pace": 0.6}))?);
    let none = members_of(&peer.call(json!({"cmd": "members", "n": 4, "pace": 0.6}))?);
    peer.call(json!({"cmd": "router", "as": "poster"}))?;
    let poster = peer.identity("poster")?;
    add_members(&server, &group, &full, "full")?;
    add_members(&server, &group, &short, "short")?;
    add_members(&server, &group, &none, "none")?;
    add_members(&server, &group, std::slice::from_ref(&poster), "full")?;
    wait_members(&mut peer, &group, 21)?;
    let lxmf = s(&group, "lxmf_destination_hash");
    assert_eq!(peer.call(json!({"cmd": "send", "as": "poster", "dest": lxmf, "content": hex::encode("paced hello")}))?["delivered"], true);
    let inbox = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let v = peer.call(json!({"cmd": "member_inbox", "unique": 0, "timeout": 0}))?;
            let got = receipts(&v);
            let done = full.iter().chain(&short).all(|m| got.get(m).is_some_and(|(h, _, _)| !h.is_empty()));
            if done || std::time::Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let contents: HashMap<String, Vec<String>> = inbox["members"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(h, got)| {
                    let texts = got.as_array().cloned().unwrap_or_default().iter().map(|g| String::from_utf8_lossy(&hex::decode(s(g, "content")).unwrap_or_default()).into_owned()).collect();
                    (h.clone(), texts)
                })
                .collect()
        })
        .unwrap_or_default();
    for m in &full {
        assert_eq!(contents[m].len(), 1, "full mode: {:?}", contents[m]);
        assert!(contents[m][0].ends_with(": paced hello"), "full mode: {:?}", contents[m]);
    }
    for m in &short {
        assert!(contents[m][0].starts_with("[Modes]") && contents[m][0].contains("/history"), "short mode: {:?}", contents[m]);
    }
    for m in &none {
        assert!(contents[m].is_empty(), "mode none receives nothing");
    }
    // Pacing: in any window, no more than burst + rate × window messages reached the members.
    let mut times: Vec<f64> = receipts(&inbox).values().flat_map(|(_, _, t)| t.clone()).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    for (i, start) in times.iter().enumerate() {
        for (j, end) in times.iter().enumerate().skip(i) {
            let allowed = 2.0 + rate * (end - start) + 1.0;
            assert!(((j - i + 1) as f64) <= allowed, "{} messages in {:.2}s exceeds the bucket", j - i + 1, end - start);
        }
    }

    // The operator adds an admin (the CLI acts through the running group actor, so the members
    // hear of it), and the admin's kick reaches the kicked member and the others, as a notice.
    let kicked = full[0].clone();
    server.cli(&["member", "add", &group["id"].to_string(), &peer.identity("admin")?, "--rights", "kick"])?;
    peer.link("admin", &s(&group, "group_destination_hash"), Some("admin"))?;
    peer.request("admin", "/api/v1/members/kick", &pb::KickRequest { identity_hash: hex::decode(&kicked)? })?.ok::<pb::Ack>()?;
    let told: Vec<&String> = full.iter().chain(&short).collect();
    let inbox = peer.call(json!({"cmd": "member_inbox", "unique": 3, "members": told, "timeout": 40}))?;
    let got = receipts(&inbox);
    for m in told {
        assert_eq!(got[m].0.len(), 3, "{m} got the post, the admin's arrival and the kick notice");
    }
    Ok(())
}
