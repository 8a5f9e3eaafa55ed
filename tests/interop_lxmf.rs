//! LXMF for hosted groups against stock Python `LXMRouter`s (lxmf 1.2.1): posting, delivery proofs,
//! the fan-out to other members with attribution, and group rules on inbound.

mod common;

use std::time::Duration;

use common::{Peer, R, Server, s};
use meshgroup::wire::proto as pb;
use serde_json::{Value, json};

/// Joins `name` to the group over the link API (so membership is immediate).
fn join(peer: &mut Peer, group: &Value, name: &str) -> R {
    peer.link(&format!("join-{name}"), &s(group, "group_destination_hash"), Some(name))?;
    let r: pb::JoinResponse =
        peer.request(&format!("join-{name}"), "/api/v1/join", &pb::JoinRequest { display_name: name.into(), ..Default::default() })?.ok()?;
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

    // Direct with a 3 KB body (a Resource over a link): stored and DELIVERED; too big for one packet,
    // bob's copy comes over a direct link from the group, whole.
    let big = "x".repeat(3000);
    let sent = peer.call(json!({"cmd": "send", "as": "alice", "dest": lxmf, "content": hex::encode(&big), "method": "direct"}))?;
    assert_eq!(sent["delivered"], true, "{sent}");
    let inbox = peer.call(json!({"cmd": "inbox", "as": "bob", "count": 2}))?;
    let full = String::from_utf8(hex::decode(s(&inbox["messages"][1], "content"))?)?;
    assert_eq!(full, format!("alice: {big}"));
    assert_eq!(s(&inbox["messages"][1], "source"), lxmf);
    assert_eq!(inbox["messages"][1]["signature_validated"], true);
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
    let mut peer = Peer::connect(server.rns_port)?;
    let admin = peer.identity("admin")?;
    server.cli(&["member", "add", &group["id"].to_string(), &admin, "--rights", "approve,ban"])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    peer.call(json!({"cmd": "router", "as": "mallory"}))?;
    let mallory = peer.identity("mallory")?;
    let sent = peer.call(json!({"cmd": "send", "as": "mallory", "dest": lxmf, "content": hex::encode("let me in"), "timeout": 12}))?;
    assert_ne!(sent["delivered"], true, "a stranger's post is not acknowledged");
    assert_eq!(stored_count(&server, &group)?, 0);

    // mallory becomes a member, then an admin bans them (through the API: effective at once).
    let gdest = s(&group, "group_destination_hash");
    peer.link("m", &gdest, Some("mallory"))?;
    peer.request("m", "/api/v1/join", &pb::JoinRequest::default())?.ok::<pb::JoinResponse>()?;
    peer.link("a", &gdest, Some("admin"))?;
    let id = hex::decode(&mallory)?;
    peer.request("a", "/api/v1/join-requests/approve", &pb::DecideJoinRequest { identity_hash: id.clone() })?.ok::<pb::Ack>()?;
    peer.request("a", "/api/v1/members/ban", &pb::BanRequest { identity_hash: id, reason: "spam".into() })?.ok::<pb::Ack>()?;
    let sent = peer.call(json!({"cmd": "send", "as": "mallory", "dest": lxmf, "content": hex::encode("still here"), "timeout": 12}))?;
    assert_ne!(sent["delivered"], true);
    assert_eq!(stored_count(&server, &group)?, 0);
    let metrics = server.metrics()?;
    assert!(metrics.contains("outcome=\"not_member\""), "stranger counted");
    assert!(metrics.contains("outcome=\"banned\""), "ban counted");
    Ok(())
}

fn texts(inbox: &Value) -> Vec<String> {
    inbox["messages"]
        .as_array()
        .map(|a| a.iter().map(|m| String::from_utf8_lossy(&hex::decode(s(m, "content")).unwrap_or_default()).into_owned()).collect())
        .unwrap_or_default()
}

fn inbox_texts(peer: &mut Peer, name: &str, count: usize) -> R<Vec<String>> {
    Ok(texts(&peer.call(json!({"cmd": "inbox", "as": name, "count": count, "timeout": 20}))?))
}

/// Waits until `name` has received a message holding `needle`; returns every text so far.
fn await_text(peer: &mut Peer, name: &str, needle: &str) -> R<Vec<String>> {
    await_text_after(peer, name, needle, 0)
}

/// Like [`await_text`], looking only at the messages from index `after` on.
fn await_text_after(peer: &mut Peer, name: &str, needle: &str, after: usize) -> R<Vec<String>> {
    let all = texts(&peer.call(json!({"cmd": "inbox", "as": name, "contains": needle, "after": after, "timeout": 30}))?);
    if all.iter().skip(after).any(|t| t.contains(needle)) { Ok(all) } else { Err(format!("{name} never got {needle:?}: {all:?}").into()) }
}

/// The running server picks CLI changes up within a second; waits until it counts `name` a member.
fn wait_member(peer: &mut Peer, group: &Value, name: &str) -> R {
    let link = format!("watch-{name}");
    peer.link(&link, &s(group, "group_destination_hash"), Some(name))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !peer.request(&link, "/api/v1/info", &pb::InfoRequest {})?.ok::<pb::InfoResponse>()?.is_member {
        if std::time::Instant::now() > deadline {
            return Err(format!("the server never saw {name} join").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

fn send_text(peer: &mut Peer, who: &str, dest: &str, text: &str) -> R<Value> {
    peer.call(json!({"cmd": "send", "as": who, "dest": dest, "content": hex::encode(text), "timeout": 20}))
}

/// A started group and two stock clients on one peer: carol, a stranger, and alice, a member with
/// `rights` (added with the CLI and seen by the running server).
struct Cast {
    server: Server,
    group: Value,
    lxmf: String,
    peer: Peer,
    carol: String,
    alice: String,
}

fn cast(create: &[&str], rights: &str) -> R<Cast> {
    let mut server = Server::new()?;
    let group = server.create_group(create)?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "router", "as": "carol"}))?;
    peer.call(json!({"cmd": "router", "as": "alice"}))?;
    let carol = peer.identity("carol")?;
    let alice = peer.identity("alice")?;
    server.cli(&["member", "add", &group["id"].to_string(), &alice, "--name", "alice", "--rights", rights])?;
    wait_member(&mut peer, &group, "alice")?;
    Ok(Cast { server, group, lxmf, peer, carol, alice })
}

#[test]
fn text_commands_from_a_stock_client() -> R {
    let Cast { server, group, lxmf, mut peer, carol, alice: _ } = cast(&["--name", "Commands"], "kick")?;

    // A stranger joins a public group with /join, under the name their client announces.
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/join")?["delivered"], true);
    let texts = inbox_texts(&mut peer, "carol", 1)?;
    assert!(texts[0].contains("Welcome") && texts[0].contains("/name NEW NAME"), "{texts:?}");
    let listed = server.cli(&["member", "list", &group["id"].to_string()])?.to_string();
    assert!(listed.contains("\"carol\""), "listed by the announced name: {listed}");
    // alice posts (and carol, a member now, receives it), then carol reads history.
    assert_eq!(send_text(&mut peer, "alice", &lxmf, "first post")?["delivered"], true);
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/history 5")?["delivered"], true);
    let texts = inbox_texts(&mut peer, "carol", 3)?;
    assert!(texts.iter().any(|t| t.contains("#") && t.contains("first post") && !t.starts_with("alice:")), "history reply: {texts:?}");
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/name Carol C")?["delivered"], true);
    await_text(&mut peer, "carol", "You are now called Carol C")?;
    assert!(server.cli(&["member", "list", &group["id"].to_string()])?.to_string().contains("Carol C"));
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/notify off")?["delivered"], true);
    await_text(&mut peer, "carol", "Notifications: none")?;
    // A holder of the kick right kicks with /kick; carol hears of it, and is no longer a member.
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/kick {carol}"))?["delivered"], true);
    // Both sides by display name: alice hears whom she removed, carol who removed her.
    await_text(&mut peer, "alice", &format!("Removed Carol C <{carol}>."))?;
    await_text(&mut peer, "carol", "You were removed from the group by alice.")?;
    let members = server.cli(&["member", "list", &group["id"].to_string()])?;
    assert!(!members.to_string().contains(&carol));
    // Without the right, /ban is refused.
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/ban {carol} spam"))?["delivered"], true);
    let texts = inbox_texts(&mut peer, "alice", 2)?;
    assert!(texts.iter().any(|t| t.contains("Refused")), "{texts:?}");
    Ok(())
}

#[test]
fn admin_text_commands_on_a_private_group() -> R {
    let Cast { server, group, lxmf, mut peer, carol, alice } = cast(&["--name", "Back Room", "--private"], "approve,ban,delete")?;

    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/help")?["delivered"], true);
    await_text(&mut peer, "carol", "/approve ID")?;
    // A private group takes a request, which an admin approves by text.
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/join")?["delivered"], true);
    await_text(&mut peer, "carol", "Join request sent")?;
    assert_eq!(send_text(&mut peer, "alice", &lxmf, "/requests")?["delivered"], true);
    let pending = await_text(&mut peer, "alice", "1 pending (send /approve ID or /reject ID):")?;
    assert!(pending.iter().any(|t| t.contains(&format!("<{carol}>"))), "{pending:?}");
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/approve {carol}"))?["delivered"], true);
    // The approver's confirmation names the requester as the request did.
    let approved = await_text(&mut peer, "alice", "Approved ")?;
    assert!(approved.iter().any(|t| t.starts_with("Approved ") && t.contains(&format!("<{carol}>."))), "{approved:?}");
    // The approved requester is told, once, in the second person.
    await_text(&mut peer, "carol", "Your join request was approved: you're in.")?;
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/members")?["delivered"], true);
    let members = await_text(&mut peer, "carol", "2 members:")?;
    assert!(members.iter().any(|t| t.contains(&format!("alice <{alice}> [approve,ban,delete]"))), "{members:?}");

    // carol posts; alice finds its id in /history and deletes it; the history shows the tombstone.
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "regrettable")?["delivered"], true);
    assert_eq!(send_text(&mut peer, "alice", &lxmf, "/history 5")?["delivered"], true);
    let history = await_text(&mut peer, "alice", ": regrettable")?;
    let line = history.iter().flat_map(|t| t.lines()).find(|l| l.starts_with('#') && l.ends_with(": regrettable")).ok_or("no history line")?;
    let id = line[1..].split(' ').next().ok_or("no id")?.to_owned();
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/delete {id}"))?["delivered"], true);
    await_text(&mut peer, "alice", &format!("Deleted message #{id}"))?;
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/history 5")?["delivered"], true);
    await_text(&mut peer, "carol", &format!("#{id} (deleted)"))?;

    // carol leaves; alice bans and then unbans her, and carol may ask to join again.
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/leave")?["delivered"], true);
    await_text(&mut peer, "carol", "You left the group")?;
    assert!(!server.cli(&["member", "list", &group["id"].to_string()])?.to_string().contains(&carol));
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/ban {carol} spam"))?["delivered"], true);
    await_text(&mut peer, "alice", &format!("Banned {carol}"))?;
    assert!(server.cli(&["ban", "list", &group["id"].to_string()])?.to_string().contains("spam"));
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/unban {carol}"))?["delivered"], true);
    await_text(&mut peer, "alice", &format!("Unbanned {carol}"))?;
    let seen = inbox_texts(&mut peer, "carol", 0)?.len();
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/join")?["delivered"], true);
    await_text_after(&mut peer, "carol", "Join request sent", seen)?;
    // alice declines it; carol, the one it is about, is told once, in the second person.
    assert_eq!(send_text(&mut peer, "alice", &lxmf, &format!("/reject {carol}"))?["delivered"], true);
    await_text_after(&mut peer, "carol", "Your join request was declined.", seen)?;
    Ok(())
}

#[test]
fn operator_cli_acts_through_the_running_group_actor() -> R {
    let Cast { server, group, lxmf, mut peer, carol, alice: _ } = cast(&["--name", "Operated"], "none")?;
    let id = group["id"].to_string();
    assert_eq!(send_text(&mut peer, "carol", &lxmf, "/join")?["delivered"], true);
    await_text(&mut peer, "carol", "Welcome")?;

    // The ban goes through the group actor, so its notice goes out now, not at the next restart;
    // only the banned member is told (the others see it in the history's events).
    server.cli(&["ban", "add", &id, &carol, "--reason", "spam"])?;
    let texts = await_text(&mut peer, "carol", "You were banned")?;
    assert!(texts.iter().any(|t| t.contains("You were banned") && t.ends_with("spam")), "{texts:?}");
    // So does a rename: the very next request sees it.
    server.cli(&["group", "update", &id, "--name", "Renamed"])?;
    let info: pb::InfoResponse = peer.request("watch-alice", "/api/v1/info", &pb::InfoRequest {})?.ok()?;
    assert_eq!(info.name, "Renamed");
    // A refused operation comes back with the actor's reason.
    let refused = server.cli(&["member", "set-permissions", &id, &carol, "kick"]).err().ok_or("granting rights to a non-member passed")?;
    assert!(refused.to_string().contains("member not found"), "{refused}");
    let log = server.log();
    assert!(["op=AddMember {", "op=Ban {", "op=Rename {", "op=SetPermissions {"].iter().all(|op| log.contains(op)), "{log}");

    // Issue 16: a group created while the server runs can be configured, or deleted, at once.
    for i in 0..3 {
        let race = server.create_group(&["--name", &format!("Race {i}")])?;
        let rid = race["id"].to_string();
        server.cli(&["member", "add", &rid, &format!("{:032x}", 0xabc0 + i)])?;
        server.cli(&["group", "delete", &rid])?;
    }

    // Bad input on the socket itself gets an answer and a log line; the server carries on.
    let ask = |line: &str| -> R<String> {
        use std::io::{BufRead, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(server.dir.join("admin.sock"))?;
        sock.write_all(line.as_bytes())?;
        let mut answer = String::new();
        std::io::BufReader::new(sock).read_line(&mut answer)?;
        Ok(answer)
    };
    assert!(ask("{not json\n")?.contains("malformed request"));
    assert!(ask("{\"group\": 99999, \"op\": \"bans\"}\n")?.contains("not running"));
    let leave = ask(&format!("{{\"group\": {id}, \"op\": \"leave\"}}\n"))?;
    assert!(leave.contains("\"error\":\"") && leave.contains("\"failure\":false"), "the owner cannot leave: {leave}");
    assert!(server.log().contains("admin request refused"));
    assert_eq!(peer.request("watch-alice", "/api/v1/info", &pb::InfoRequest {})?.ok::<pb::InfoResponse>()?.member_count, 1);
    Ok(())
}

#[test]
fn post_stamps_tickets_and_forgeries() -> R {
    let mut server = Server::new()?;
    let group = server.create_group(&["--name", "Stamped", "--post-stamp-cost", "8"])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "router", "as": "alice"}))?;
    join(&mut peer, &group, "alice")?;

    // The stock router learns the cost from the announce (or path response) and stamps by itself.
    let cost = peer.call(json!({"cmd": "stamp_cost", "as": "alice", "dest": lxmf}))?;
    assert_eq!(cost["cost"], 8);
    let first = send_text(&mut peer, "alice", &lxmf, "worked for this")?;
    assert_eq!(first["delivered"], true, "{first}");
    assert_eq!(s(&first, "stamp").len(), 64, "a 32-byte proof-of-work stamp");
    // The reply carried a ticket, which the stock router now holds and uses.
    let texts = inbox_texts(&mut peer, "alice", 1)?;
    assert!(texts[0].contains("ticket"), "{texts:?}");
    let t = peer.call(json!({"cmd": "tickets", "as": "alice", "dest": lxmf}))?;
    assert_eq!(s(&t, "ticket").len(), 32, "the stock router remembered the ticket");
    let second = send_text(&mut peer, "alice", &lxmf, "paid by ticket")?;
    assert_eq!(second["delivered"], true);
    assert_eq!(s(&second, "stamp").len(), 32, "a 16-byte ticket stamp");

    // A forged stamp is refused, and nothing is stored.
    let forged = peer.call(json!({"cmd": "send_forged", "as": "alice", "dest": lxmf, "content": hex::encode("forged")}))?;
    assert_eq!(forged["delivered"], false);
    let stored = history(&mut peer, "join-alice")?;
    assert_eq!(stored.iter().map(|m| String::from_utf8_lossy(&m.content).into_owned()).collect::<Vec<_>>(), vec!["paid by ticket", "worked for this"]);
    let metrics = server.metrics()?;
    for needle in [
        "purpose=\"post\",outcome=\"valid\"",
        "purpose=\"post\",outcome=\"ticket\"",
        "purpose=\"post\",outcome=\"invalid\"",
        "meshgroup_tickets_issued_total 1",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    Ok(())
}

#[test]
fn members_who_demand_stamps_get_stamped_copies() -> R {
    let mut server = Server::new()?;
    server.extra_env.push(("MESHGROUP_LOG_FILTER".into(), "meshgroup=debug,warn".into()));
    let group = server.create_group(&["--name", "Stamps Out"])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    // carol's stock router announces a cost of 8 and drops anything without a valid stamp.
    let carol = peer.call(json!({"cmd": "router", "as": "carol", "stamp_cost": 8, "enforce_stamps": true}))?;
    // The cost travels only in her announce. A burst of announces on a new interface is held
    // back (as the reference does), so alice's router starts only once carol's announce is in.
    let heard = format!("dest={} cost=8", s(&carol, "lxmf_hash"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.log().contains(&heard) {
        if std::time::Instant::now() > deadline {
            return Err("the server never heard carol's announce".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    peer.call(json!({"cmd": "router", "as": "alice"}))?;
    join(&mut peer, &group, "alice")?;
    join(&mut peer, &group, "carol")?;
    assert_eq!(send_text(&mut peer, "alice", &lxmf, "worth the work")?["delivered"], true);
    let texts = inbox_texts(&mut peer, "carol", 1)?;
    assert_eq!(texts, vec!["alice: worth the work".to_owned()]);
    Ok(())
}

#[test]
fn random_stamp_brute_force_stores_nothing_and_earns_no_ticket() -> R {
    let mut server = Server::new()?;
    // Four checks at once per identity: the three failures below may arrive together.
    for (k, v) in [("MAX_FAILURES", "3"), ("POOL_PER_IDENTITY", "4"), ("ADAPTIVE_SPIKE_PER_MIN", "50"), ("ADAPTIVE_MIN_COST", "0"), ("ADAPTIVE_MAX_COST", "6")]
    {
        server.extra_env.push((format!("MESHGROUP_STAMPS__{k}"), v.into()));
    }
    // Cost 4: a random stamp meets it 1 time in 16, so 200 tries would land about 12 posts (and a
    // ticket) if failures were not limited.
    let group = server.create_group(&["--name", "Brute", "--post-stamp-cost", "4"])?;
    server.start()?;
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut peer = Peer::connect(server.rns_port)?;
    for who in ["amy", "mal"] {
        peer.call(json!({"cmd": "router", "as": who}))?;
        join(&mut peer, &group, who)?;
    }
    // amy pays once, before the attack, and holds a ticket.
    assert_eq!(peer.call(json!({"cmd": "stamp_cost", "as": "amy", "dest": lxmf}))?["cost"], 4);
    assert_eq!(send_text(&mut peer, "amy", &lxmf, "honest work")?["delivered"], true);
    assert!(inbox_texts(&mut peer, "amy", 1)?[0].contains("ticket"));

    // mal: three stamps that fail (chosen so, for a deterministic run), then 200 random ones.
    peer.call(json!({"cmd": "send_random_stamps", "as": "mal", "dest": lxmf, "n": 3, "cost": 4, "weak": true}))?;
    let post = |outcome: &str| -> R<f64> {
        Ok(common::metric_sum(&server.metrics()?, "meshgroup_stamps_checked_total", &["purpose=\"post\"", &format!("outcome=\"{outcome}\"")]))
    };
    common::poll(Duration::from_secs(30), Duration::from_millis(200), "three failed stamps", || Ok((post("invalid")? >= 3.0).then_some(())))?;
    peer.call(json!({"cmd": "send_random_stamps", "as": "mal", "dest": lxmf, "n": 200, "cost": 4, "pace": 0.02}))?;
    // Every one is refused unchecked: the pool does no work for the attacker, so none can pass.
    common::poll(Duration::from_secs(60), Duration::from_millis(200), "200 refusals", || {
        let n = post("cooldown")?;
        if n >= 200.0 { Ok(Some(())) } else { Err(format!("{n} so far").into()) }
    })?;
    assert_eq!(post("invalid")?, 3.0, "only the first three were checked");
    assert_eq!(stored_count(&server, &group)?, 1, "only amy's post is stored");
    let metrics = server.metrics()?;
    assert_eq!(common::metric_sum(&metrics, "meshgroup_tickets_issued_total", &[]), 1.0, "amy's ticket only");
    assert_eq!(s(&peer.call(json!({"cmd": "tickets", "as": "mal", "dest": lxmf}))?, "ticket"), "", "mal holds no ticket");
    assert!(server.log().contains("stamp refused"), "refusals are logged (at a bounded rate)");

    // The spike raised the announced post cost at once; amy's ticket still pays.
    common::poll(Duration::from_secs(30), Duration::from_millis(500), "the raised cost at amy's router", || {
        Ok(peer.call(json!({"cmd": "stamp_cost", "as": "amy", "dest": lxmf}))?["cost"].as_u64().filter(|c| *c > 4))
    })?;
    assert!(common::metric_sum(&server.metrics()?, "meshgroup_stamp_cost_raise", &[]) >= 1.0);
    let paid = send_text(&mut peer, "amy", &lxmf, "still paid by ticket")?;
    assert_eq!((paid["delivered"].as_bool(), s(&paid, "stamp").len()), (Some(true), 32), "a ticket stamp, accepted: {paid}");
    Ok(())
}

/// Issue 16: a stranger whose key can be had is told once, per identity, how to join (not again
/// within the limit); a client that never announced is told too, its key fetched by a path
/// request. A stock client asking to join a group with a join stamp is told what does work, and a
/// `/history` too long for its five parts keeps the newest messages, numbered, and says what it cut.
/// Where the post cost is at least the join cost, the stock client's own stamp pays for the join.
#[test]
fn strangers_are_told_once_and_stock_clients_get_whole_answers() -> R {
    let mut server = Server::new()?;
    let door = server.create_group(&["--name", "Front Door"])?;
    let stamped = server.create_group(&["--name", "Stamped Door", "--join-stamp-cost", "8"])?;
    let archive = server.create_group(&["--name", "Archive"])?;
    // A post cost at or above the join cost: the stock client's own stamp pays for the join.
    let even = server.create_group(&["--name", "Even Door", "--join-stamp-cost", "4", "--post-stamp-cost", "8"])?;
    // 16 posts of about 130 characters, seeded through the library (as in the issue).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let gid = archive["id"].as_i64().ok_or("id")?;
    rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let rows = (1..=16)
            .map(|i| meshgroup::store::NewMessage {
                group_id: gid,
                message_hash: format!("{i:064x}"),
                sender_identity_hash: "ab".repeat(16),
                sender_display_name: "Poster".into(),
                timestamp: 1_700_000_000.0 + i as f64,
                title: Vec::new(),
                content: format!("post {i:02} {}", "x".repeat(120)).into_bytes(),
                fields: vec![0x80],
                reply_to_id: None,
            })
            .collect();
        store.insert_messages_bulk(rows).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    server.start()?;
    let (lxmf, stamped_lxmf, archive_lxmf) = (s(&door, "lxmf_destination_hash"), s(&stamped, "lxmf_destination_hash"), s(&archive, "lxmf_destination_hash"));
    let mut peer = Peer::connect(server.rns_port)?;
    peer.call(json!({"cmd": "router", "as": "dan"}))?;
    peer.call(json!({"cmd": "router", "as": "eve", "announce": false}))?;
    let told = "You are not a member of Front Door. Send /join to join.";
    // Not stored, so never proven: the stock client shows the post as sent, not delivered.
    let post = |peer: &mut Peer, who: &str| peer.call(json!({"cmd": "send", "as": who, "dest": lxmf, "content": hex::encode("hello?"), "wait": false}));
    for who in ["dan", "eve"] {
        post(&mut peer, who)?;
        await_text(&mut peer, who, told)?;
    }
    // dan posts again: refused, and not told a second time.
    post(&mut peer, "dan")?;
    common::poll(Duration::from_secs(30), Duration::from_millis(200), "three refused posts", || {
        Ok((common::metric_sum(&server.metrics()?, "meshgroup_lxmf_received_total", &["outcome=\"not_member\""]) >= 3.0).then_some(()))
    })?;
    assert_eq!(send_text(&mut peer, "dan", &lxmf, "/help")?["delivered"], true);
    let got = await_text(&mut peer, "dan", "Commands:")?;
    assert_eq!(got.iter().filter(|t| t.contains(told)).count(), 1, "told once: {got:?}");

    // A join stamp: the stock client learns what it can do instead.
    assert_eq!(send_text(&mut peer, "dan", &stamped_lxmf, "/join")?["delivered"], true);
    let got = await_text(&mut peer, "dan", "proof of work")?;
    let advice = got.iter().find(|t| t.contains("proof of work")).ok_or("no advice")?;
    assert!(advice.contains("/api/v1/join") && advice.contains("operator to add you"), "{advice}");
    assert!(!server.cli(&["member", "list", &stamped["id"].to_string()])?.to_string().contains(&peer.identity("dan")?));
    let even_lxmf = s(&even, "lxmf_destination_hash");
    assert_eq!(peer.call(json!({"cmd": "stamp_cost", "as": "dan", "dest": even_lxmf}))?["cost"], 8);
    assert_eq!(send_text(&mut peer, "dan", &even_lxmf, "/join")?["delivered"], true);
    await_text(&mut peer, "dan", "Welcome")?;

    // /history 10 over sixteen long posts: the newest arrive, numbered, and the cut is said.
    let seen = inbox_texts(&mut peer, "dan", 0)?.len();
    assert_eq!(send_text(&mut peer, "dan", &archive_lxmf, "/join")?["delivered"], true);
    await_text_after(&mut peer, "dan", "Welcome", seen)?;
    let seen = inbox_texts(&mut peer, "dan", 0)?.len();
    assert_eq!(send_text(&mut peer, "dan", &archive_lxmf, "/history 10")?["delivered"], true);
    let first = await_text_after(&mut peer, "dan", "older not shown", seen)?;
    let n: usize =
        first.iter().skip(seen).find_map(|t| t.strip_prefix("(1/")?.split(')').next()?.parse().ok()).ok_or(format!("no numbered part: {first:?}"))?;
    let all = texts(&peer.call(json!({"cmd": "inbox", "as": "dan", "count": seen + n, "timeout": 30}))?);
    let mut parts: Vec<&String> = all[seen..].iter().filter(|t| t.starts_with('(')).collect();
    assert_eq!(parts.len(), n, "{all:?}");
    parts.sort_by_key(|t| t[1..].split('/').next().and_then(|i| i.parse::<usize>().ok()));
    let text: String = parts.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("\n");
    eprintln!("/history 10 in {n} parts:\n{text}");
    assert!(text.contains("post 16 ") && text.contains("post 15 "), "the newest arrive: {text}");
    let order: Vec<usize> = (1..=16).filter_map(|i| text.find(&format!("post {i:02} "))).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {text}");
    assert!(parts[0].lines().nth(1).is_some_and(|l| l.contains("older not shown")), "{text}");
    Ok(())
}
