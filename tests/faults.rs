//! Hostile peers against the limits of issue 13, with the reference Python stack (rns 1.5.7) on
//! 127.0.0.1: decompression bombs on anonymous links, and one peer opening too many links.

mod common;

use std::time::Duration;

use common::{Peer, R, Server, metric_sum, poll, proc_kib, s};
use serde_json::json;

/// RSS the bombs may add to the idle server, in KiB (the bound: 100 MB).
const BOMB_RSS_BOUND_KIB: u64 = 100 * 1024;

#[test]
fn decompression_bombs_are_refused_and_memory_stays_bounded() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Bomb Target"])?;
    server.start()?;
    let pid = server.pid().ok_or("no pid")?;
    let dest = s(&g, "group_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "link", "link": "probe", "dest": dest}))?;
    peer.info("probe")?;
    let idle = proc_kib(pid, "VmRSS")?;

    // 4 links at once, each a 60 MB body of zeros: RNS splits it into 1 MiB segments, each of
    // which bz2 makes a few dozen bytes. The first segment's size tells the whole's.
    let r = peer.call(json!({"cmd": "bomb", "dest": dest, "links": 4, "size": 60 * 1024 * 1024, "request_timeout": 30}))?;
    let outcomes = r["outcomes"].as_array().ok_or("no outcomes")?;
    assert_eq!(outcomes.len(), 4, "{r}");
    assert!(outcomes.iter().all(|o| o != "answered" && o != "no_link"), "every bomb is refused: {r}");
    let peak = proc_kib(pid, "VmHWM")?;
    assert!(peak.saturating_sub(idle) < BOMB_RSS_BOUND_KIB, "peak RSS {peak} KiB, idle {idle} KiB");
    // Counted by whichever cap stopped each (too large, or a concurrency cap when the four race);
    // one the crate refused by its advertisement raises no event, so at least one is counted.
    let refused = poll(Duration::from_secs(20), Duration::from_millis(100), "transfer refusals counted", || {
        let n = metric_sum(&server.metrics()?, "meshgroup_work_refused_total", &["kind=\"transfer\""]);
        Ok((n >= 1.0).then_some(n))
    })?;
    assert!(refused >= 1.0);

    // A body too big even compressed (random bytes) is refused by its advertisement, before any part.
    let r = peer.call(json!({"cmd": "bomb", "dest": dest, "links": 1, "size": 300 * 1024, "random": true, "request_timeout": 20}))?;
    assert_ne!(r["outcomes"][0], "answered", "{r}");
    assert!(server.log().contains("reject_request_advertisement") || server.log().contains("torn down"), "the refusal is logged");

    // The server still answers.
    peer.call(json!({"cmd": "link", "link": "after", "dest": dest}))?;
    peer.info("after")?;
    eprintln!("bomb: idle {idle} KiB, peak {peak} KiB, refused {refused}");
    Ok(())
}

#[test]
fn a_peer_opening_too_many_links_keeps_only_its_share() -> R {
    let mut server = Server::new()?;
    server.extra_env.push(("MESHGROUP_LIMITS__MAX_LINKS_PER_INTERFACE".into(), "10".into()));
    server.extra_env.push(("MESHGROUP_LIMITS__MAX_LINKS_PER_IDENTITY".into(), "4".into()));
    let g = server.create_group(&["--name", "Link Flood"])?;
    server.start()?;
    let dest = s(&g, "group_destination_hash");

    // One identity, 8 links: 4 are kept once they identify.
    let mut a = Peer::connect(server.rns_port)?;
    a.identity("mallory")?;
    let r = a.call(json!({"cmd": "link_flood", "dest": dest, "n": 8, "as": "mallory", "prefix": "id"}))?;
    assert_eq!(r["established"], 8, "{r}");
    poll(Duration::from_secs(15), Duration::from_millis(100), "identity cap", || {
        let open = a.call(json!({"cmd": "links_open", "prefix": "id"}))?["open"].as_u64().unwrap_or(0);
        Ok((open == 4).then_some(()))
    })?;

    // One interface (one TCP connection), 20 anonymous links: 10 are kept.
    let mut b = Peer::connect(server.rns_port)?;
    let r = b.call(json!({"cmd": "link_flood", "dest": dest, "n": 20, "prefix": "anon"}))?;
    let up = r["established"].as_u64().unwrap_or(0);
    poll(Duration::from_secs(15), Duration::from_millis(100), "interface cap", || {
        let open = b.call(json!({"cmd": "links_open", "prefix": "anon"}))?["open"].as_u64().unwrap_or(0);
        Ok((open == 10).then_some(()))
    })?;
    let text = server.metrics()?;
    assert_eq!(metric_sum(&text, "meshgroup_work_refused_total", &["kind=\"link\"", "reason=\"links_per_identity\""]), 4.0);
    assert_eq!(metric_sum(&text, "meshgroup_work_refused_total", &["kind=\"link\"", "reason=\"links_per_interface\""]), (up - 10) as f64);
    assert!(server.log().contains("link torn down at a limit"));

    // A kept link still works, and a new peer (another interface) still gets in.
    b.info("anon-0").or_else(|_| b.info("anon-1"))?;
    let mut c = Peer::connect(server.rns_port)?;
    c.call(json!({"cmd": "link", "link": "fresh", "dest": dest}))?;
    c.info("fresh")?;
    Ok(())
}

#[test]
fn an_idle_link_is_closed_by_the_server_and_a_busy_one_is_not() -> R {
    let mut server = Server::new()?;
    server.extra_env.push(("MESHGROUP_LIMITS__LINK_IDLE_SECS".into(), "3".into()));
    let g = server.create_group(&["--name", "Idle Links"])?;
    server.start()?;
    let dest = s(&g, "group_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "link_flood", "dest": dest, "n": 1, "prefix": "idle"}))?;
    peer.call(json!({"cmd": "link", "link": "busy", "dest": dest}))?;
    let started = std::time::Instant::now();
    // The busy link makes a request every second; the idle one carries nothing and goes.
    poll(Duration::from_secs(20), Duration::from_secs(1), "the idle link closed", || {
        peer.info("busy")?;
        let open = peer.call(json!({"cmd": "links_open", "prefix": "idle"}))?["open"].as_u64().unwrap_or(1);
        Ok((open == 0).then_some(()))
    })?;
    assert!(started.elapsed() >= Duration::from_secs(3), "not before link_idle_secs");
    peer.info("busy")?;
    Ok(())
}
