//! The fan-out against real Python LXMF members: all three modes and notices, a SIGKILL in the
//! middle of a fan-out, and pacing measured on the wire.

mod common;

use std::collections::{HashMap, HashSet};

use std::time::Duration;

use common::{Peer, R, Server, poll, s};
use meshgroup::wire::proto as pb;
use serde_json::{Value, json};

/// Adds members with the library (as an operator's bulk import would), bumps the group's
/// `updated_at`, and asks a running server to refresh the group through its admin socket.
fn add_members(server: &Server, group: &Value, members: &[String], mode: &str) -> R {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let gid = group["id"].as_i64().ok_or("id")?;
        for (i, m) in members.iter().enumerate() {
            store.add_member(gid, m, &format!("m{i}"), 0, mode).await?;
        }
        store.update_group(gid, meshgroup::store::GroupPatch::default()).await?;
        // The server holds the group in memory: the admin socket's refresh reloads it.
        meshgroup::admin::start(&server.dir.join("admin.sock"), gid).await?;
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

/// Starts a paced fan-out of one post to 40 members, stops the server with `stop` when about ten
/// have their copy, starts it again, and checks that every member ends up with exactly one copy.
fn interrupted_fanout(stop: impl FnOnce(&mut Server) -> R) -> R {
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
    // Stop the server while the paced fan-out (40 members at 15/s) is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = receipts(&peer.call(json!({"cmd": "member_inbox", "unique": 1, "timeout": 0}))?);
        let reached = got.values().filter(|(h, _, _)| !h.is_empty()).count();
        if reached >= 10 || std::time::Instant::now() > deadline {
            assert!(reached < members.len(), "the stop must land mid-fan-out ({reached} reached)");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop(&mut server)?;
    let restarted = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    server.start()?;
    let inbox = peer.call(json!({"cmd": "member_inbox", "unique": 1, "timeout": 90}))?;
    let got = receipts(&inbox);
    let mut resent = 0;
    for m in &members {
        let (hashes, total, _) = got.get(m).ok_or("member missing")?;
        assert_eq!(hashes.len(), 1, "member {m} holds exactly one copy (message ids {hashes:?})");
        resent += total - 1;
    }
    let last = got.values().filter_map(|(_, _, times)| times.iter().copied().reduce(f64::min)).fold(0.0, f64::max);
    eprintln!(
        "every member has exactly one copy, the last {:.1} s after the restart; {resent} packet-level resends were de-duplicated by message id",
        last - restarted
    );
    // The restarted node has heard no member yet: their copies waited for the paths it asked for,
    // instead of going out blind before the members' interfaces were back.
    let waited = common::metric_sum(&server.metrics()?, "meshgroup_deliveries_total", &["outcome=\"no_path\""]);
    eprintln!("{waited} copies waited for a path after the restart");
    assert!(waited > 0.0, "after a restart, copies wait for their members' paths");
    // The members answer the path requests; each answer makes that member's copy due at once.
    let woken = common::metric_sum(&server.metrics()?, "meshgroup_fanout_copies_woken_total", &[]);
    eprintln!("{woken} copies went at once when their member's path arrived");
    assert!(woken > 0.0, "a path that arrives wakes the copies waiting for it");
    Ok(())
}

/// A reference node queues a fixed number of inbound packets (`qlen_in_data`, 1,024 by default)
/// and drops the rest while its one worker catches up. One Python node holds 40 members with a
/// queue of 8; the window of unproven copies (4 here, `FANOUT_WINDOW`) keeps the post's burst
/// within it, so every member has the post at the first try, before any proof timeout (30 s).
/// (With `MESHGROUP_FANOUT__WINDOW=0` instead, 11 of the 40 had it within 20 s: docs/benchmarks.md.)
#[test]
fn the_window_keeps_a_burst_within_what_the_next_node_queues() -> R {
    let mut server = Server::new()?;
    server.extra_env = vec![("MESHGROUP_FANOUT__WINDOW".into(), "4".into())];
    let group = server.create_group(&["--name", "Window"])?;
    server.start()?;
    let mut peer = Peer::connect_with_env(server.rns_port, &[("MESHGROUP_PEER_QLEN_IN_DATA", "8")])?;
    // They join over the link API, one at a time (the queue of 8 holds one link's packets), so
    // the server has heard each: the post does not wait for announces.
    let members = members_of(&peer.call(json!({"cmd": "bench_members", "n": 40, "announce": false}))?);
    let joined = peer.call(json!({"cmd": "bench_join", "dest": s(&group, "group_destination_hash"), "concurrency": 1}))?;
    assert_eq!(joined["joined"], 40, "{joined}");
    peer.call(json!({"cmd": "router", "as": "poster"}))?;
    add_members(&server, &group, &[peer.identity("poster")?], "full")?;
    wait_members(&mut peer, &group, 41)?;
    let sent = peer.call(json!({"cmd": "send", "as": "poster", "dest": s(&group, "lxmf_destination_hash"), "content": hex::encode("through the window")}))?;
    assert_eq!(sent["delivered"], true);
    let got = receipts(&peer.call(json!({"cmd": "member_inbox", "unique": 1, "timeout": 20}))?);
    let reached = members.iter().filter(|m| got.get(*m).is_some_and(|(h, _, _)| !h.is_empty())).count();
    let metrics = server.metrics()?;
    let waits = common::metric_sum(&metrics, "meshgroup_fanout_window_waits_total", &[]);
    let timeouts = common::metric_sum(&metrics, "meshgroup_deliveries_total", &["outcome=\"timeout\""]);
    eprintln!("{reached} of {} members within 20 s, {waits} window waits, {timeouts} proof timeouts", members.len());
    assert_eq!(reached, 40, "every member has the post at the first try");
    assert!(waits > 0.0, "the burst waited for places in the window");
    assert_eq!(timeouts, 0.0);
    Ok(())
}

#[test]
fn sigkill_mid_fanout_loses_nothing_and_duplicates_nothing() -> R {
    interrupted_fanout(|server| {
        server.kill9();
        Ok(())
    })
}

#[test]
fn sigterm_mid_fanout_drains_exits_zero_and_the_rest_follows_after_restart() -> R {
    interrupted_fanout(|server| {
        let t0 = std::time::Instant::now();
        let status = server.terminate()?;
        eprintln!("SIGTERM mid-fan-out: exited {status} after {:?}", t0.elapsed());
        let log = server.log();
        assert!(status.success(), "exit status {status}; log:\n{log}");
        assert!(log.contains("shutting down") && log.contains("stopped"), "no orderly shutdown in the log:\n{log}");
        assert!(!log.contains("panicked"), "a panic during shutdown:\n{log}");
        Ok(())
    })
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
                    let texts = got
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|g| String::from_utf8_lossy(&hex::decode(s(g, "content")).unwrap_or_default()).into_owned())
                        .collect();
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

    // The operator adds an admin (no one is pushed the arrival), and the admin's kick reaches the
    // kicked member alone, as a notice; the others hear of nothing but posts.
    let kicked = full[0].clone();
    server.cli(&["member", "add", &group["id"].to_string(), &peer.identity("admin")?, "--rights", "kick"])?;
    peer.link("admin", &s(&group, "group_destination_hash"), Some("admin"))?;
    peer.request("admin", "/api/v1/members/kick", &pb::KickRequest { identity_hash: hex::decode(&kicked)? })?.ok::<pb::Ack>()?;
    let inbox = peer.call(json!({"cmd": "member_inbox", "unique": 2, "members": [&kicked], "timeout": 40}))?;
    let got = receipts(&inbox);
    assert_eq!(got[&kicked].0.len(), 2, "the kicked member got the post and the kick notice");
    for m in full.iter().chain(&short).filter(|m| **m != kicked) {
        assert_eq!(got[m].0.len(), 1, "{m} got the post only");
    }

    // A rename reaches the fan-out's cache at once: the next notice carries the new name.
    server.cli(&["group", "update", &group["id"].to_string(), "--name", "Renamed"])?;
    let second = full[1].clone();
    peer.request("admin", "/api/v1/members/kick", &pb::KickRequest { identity_hash: hex::decode(&second)? })?.ok::<pb::Ack>()?;
    let inbox = peer.call(json!({"cmd": "member_inbox", "unique": 2, "members": [&second], "timeout": 40}))?;
    let texts: Vec<String> = inbox["members"][&second]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| String::from_utf8_lossy(&hex::decode(s(g, "content")).unwrap_or_default()).into_owned())
        .collect();
    assert!(texts.iter().any(|t| t.starts_with("[Renamed] You were removed")), "the notice carries the new name: {texts:?}");
    Ok(())
}

/// The life of a large group: 300 members join over the link API (8 links at a time), as
/// clients do, without announcing their `lxmf.delivery` at all. No join is pushed to anyone; the
/// post after the wave reaches every member at once (the server sends without a path to members
/// it knows from link identify); the digest reaches only the members who opted in; a kicked
/// member is told once.
#[test]
fn a_join_wave_pushes_nothing_and_the_next_post_reaches_everyone() -> R {
    const N: usize = 300;
    let mut server = Server::new()?;
    server.extra_env = vec![("MESHGROUP_NOTICES__DIGEST_INTERVAL_SECS".into(), "3".into())];
    let group = server.create_group(&["--name", "Wave"])?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    let members = members_of(&peer.call(json!({"cmd": "bench_members", "n": N, "announce": false}))?);
    let subscribers: Vec<String> = members[..5].to_vec();
    let joined = peer.call(json!({"cmd": "bench_join", "dest": s(&group, "group_destination_hash"), "concurrency": 8, "digest": subscribers}))?;
    assert_eq!((joined["joined"].as_u64(), joined["failed"].as_u64()), (Some(N as u64), Some(0)), "{joined}");
    peer.call(json!({"cmd": "router", "as": "poster"}))?;
    let gid = group["id"].to_string();
    server.cli(&["member", "add", &gid, &peer.identity("poster")?, "--name", "poster"])?;

    let lxmf = s(&group, "lxmf_destination_hash");
    assert_eq!(peer.call(json!({"cmd": "send", "as": "poster", "dest": lxmf, "content": hex::encode("after the wave")}))?["delivered"], true);
    let reached = peer.call(json!({"cmd": "bench_reached", "unique": 1, "timeout": 60}))?;
    assert_eq!(reached["reached"].as_u64(), Some(N as u64), "every member has the post");

    let kicked = members[N - 1].clone();
    server.cli(&["member", "remove", &gid, &kicked])?;
    // Two digest intervals: the kick goes into the subscribers' next digest.
    let inbox = poll(Duration::from_secs(30), Duration::from_millis(500), "the kick notice and a digest after it", || {
        let v = peer.call(json!({"cmd": "bench_inbox"}))?;
        let texts = |m: &str| v["members"][m].as_array().cloned().unwrap_or_default();
        let told = texts(&kicked).iter().any(|t| t.as_str().is_some_and(|t| t.contains("You were removed")));
        let digested = subscribers.iter().all(|m| texts(m).iter().any(|t| t.as_str().is_some_and(|t| t.contains("1 removed"))));
        Ok((told && digested).then_some(v))
    })
    .inspect_err(|_| eprintln!("{}", server.log()))?;
    let texts =
        |m: &str| -> Vec<String> { inbox["members"][m].as_array().cloned().unwrap_or_default().iter().filter_map(|t| t.as_str().map(str::to_owned)).collect() };
    for m in &members[5..N - 1] {
        assert_eq!(texts(m), vec!["poster: after the wave".to_owned()], "{m} got the post and nothing else");
    }
    let kicked_got = texts(&kicked);
    assert_eq!(kicked_got.iter().filter(|t| t.contains("You were removed")).count(), 1, "told once: {kicked_got:?}");
    assert_eq!(kicked_got.len(), 2, "the post and the notice: {kicked_got:?}");
    let wave_secs = joined["secs"].as_f64().unwrap_or(0.0);
    for m in &subscribers {
        let got = texts(m);
        let digests: Vec<&String> = got.iter().filter(|t| t.starts_with("[Wave] ")).collect();
        assert_eq!(digests.len() + 1, got.len(), "{m}: the post plus digests only: {got:?}");
        assert!(digests.iter().any(|t| t.contains(" joined")), "{m}: the wave is in a digest: {got:?}");
        // At most one digest per interval: the wave, the time to the post, the kick.
        assert!((digests.len() as f64) <= wave_secs / 3.0 + 6.0, "{m}: {} digests for a {wave_secs}s wave", digests.len());
    }
    let metrics = server.metrics()?;
    assert!(metrics.contains("meshgroup_digests_total{kind=\"members\"}"), "digests are counted");
    // 300 links came and went: stdout holds the start-up block only, not the crate's copy of
    // every link close (the log has them, timestamped).
    let out = server.stdout();
    assert!(out.starts_with("meshgroup is serving 1 group on TCP") && out.contains("Wave (public)"), "{out}");
    assert!(!out.contains("close /"), "{}", out.lines().take(5).collect::<Vec<_>>().join("\n"));
    Ok(())
}
