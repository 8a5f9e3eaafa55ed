//! `meshgroup client` against a real `meshgroup serve` and real Python members (rns 1.5.7, lxmf
//! 1.2.1 with a stock LXMRouter): joins with and without a stamp, posts both ways, `watch`,
//! incremental sync with tombstones, the private-group approval flow, the fall-back to LXMF when
//! no link can be made, and bad input.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Peer, R, Server, s};
use meshgroup::wire::proto as pb;
use serde_json::{Value, json};

/// One `meshgroup --json client` run: exit code, stdout as JSON (Null if none), stderr.
/// `args` may start with `--timeout N` (default 20 s).
fn client(dir: &Path, port: u16, args: &[&str]) -> R<(i32, Value, String)> {
    let (timeout, args) = match args {
        ["--timeout", t, rest @ ..] => (*t, rest),
        _ => ("20", args),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_meshgroup"))
        .args(["--json", "client", "--data-dir"])
        .arg(dir)
        .args(["--tcp", &format!("127.0.0.1:{port}"), "--timeout", timeout])
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = stdout.lines().last().map(serde_json::from_str).transpose()?.unwrap_or(Value::Null);
    Ok((out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A client command that must succeed; its JSON.
fn ok(dir: &Path, port: u16, args: &[&str]) -> R<Value> {
    let (code, json, err) = client(dir, port, args)?;
    if code != 0 {
        return Err(format!("client {args:?} exited {code}: {err}").into());
    }
    Ok(json)
}

/// A client command that must fail with exit code 2 and one JSON error line; the message.
fn refused(dir: &Path, port: u16, args: &[&str]) -> R<String> {
    let (code, _, err) = client(dir, port, args)?;
    assert_eq!(code, 2, "client {args:?} exits 2; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line, not {lines:?}");
    let v: Value = serde_json::from_str(lines[0])?;
    assert_eq!(v["code"], 2);
    Ok(s(&v, "error"))
}

fn texts(history: &Value) -> Vec<String> {
    history["messages"].as_array().map(|a| a.iter().map(|m| s(m, "text")).collect()).unwrap_or_default()
}

/// Bob, a stock LXMRouter on a new peer, joined to the public `group` over the link API (the link
/// stays open as `b`).
fn bob_joins(port: u16, group: &Value) -> R<Peer> {
    let mut peer = Peer::connect(port)?;
    peer.call(json!({"cmd": "router", "as": "bob"}))?;
    peer.link("b", &s(group, "group_destination_hash"), Some("bob"))?;
    assert_eq!(peer.join("b", "bob")?, pb::JoinState::Joined);
    Ok(peer)
}

/// A `meshchat.group` on its own node (a TCP server on a free port) that answers every request
/// with `reply`, which is no protobuf `Response`. Runs until the test process ends.
fn fake_group(reply: &'static [u8]) -> R<(u16, [u8; 16])> {
    use meshgroup::transport::{Node, NodeConfig, NodeEvent, interfaces::InterfaceConfig};
    let port = common::free_port()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let cfg = NodeConfig { interfaces: vec![InterfaceConfig::TcpServer { listen: ([127, 0, 0, 1], port).into() }], ..Default::default() };
            let Ok((node, mut events)) = Node::start(cfg).await else { return };
            let id = meshgroup::wire::identity::GroupIdentity::generate();
            let Ok(dest) = node.register_destination(&id.private_key, "meshchat", "group").await else { return };
            let _ = tx.send(dest);
            while let Some(ev) = events.recv().await {
                if let NodeEvent::Request { link_id, request_id, .. } = ev {
                    let _ = node.respond(link_id, request_id, reply.to_vec()).await;
                }
            }
        });
    });
    let dest = rx.recv_timeout(std::time::Duration::from_secs(10))?;
    Ok((port, dest))
}

/// A running server with one public group `name`, and alice's client joined to it as "alice".
fn alice_joins(name: &str) -> R<(Server, Value, PathBuf)> {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", name])?;
    server.start()?;
    let alice = server.dir.join("alice");
    ok(&alice, server.rns_port, &["join", &s(&g, "group_destination_hash"), "--name", "alice"])?;
    Ok((server, g, alice))
}

#[test]
fn every_client_path_is_routed_by_the_server() {
    for p in meshgroup::wire::paths::ALL {
        let group = meshgroup::api::Endpoint::ALL.iter().any(|(_, q)| q == p);
        let server = meshgroup::api::hosting::Path::ALL.iter().any(|(_, q)| q == p);
        assert!(group || server, "{p} is not a server path");
    }
}

#[test]
fn a_client_joins_posts_watches_and_syncs_with_python_members() -> R {
    let mut server = Server::new()?;
    let open = server.create_group(&["--name", "Open Mesh"])?;
    let stamped = server.create_group(&["--name", "Stamped", "--join-stamp-cost", "8"])?;
    // Pages smaller than the client asks for: the sync pages on the server's word, not on a
    // page size it assumes.
    server.extra_env.push(("MESHGROUP_LIMITS__MAX_PAGE".into(), "3".into()));
    server.start()?;
    let port = server.rns_port;
    let alice = server.dir.join("alice");

    // Bob: a stock LXMRouter, member of the public group.
    let mut peer = bob_joins(port, &open)?;

    ok(&alice, port, &["profile", "--name", "alice"])?;
    let j = ok(&alice, port, &["join", &s(&open, "group_destination_hash")])?;
    assert_eq!((s(&j, "state"), s(&j, "group")), ("joined".into(), "Open Mesh".into()));
    let j = ok(&alice, port, &["join", &s(&stamped, "group_destination_hash")])?;
    assert_eq!((s(&j, "state"), j["stamp_cost"].as_u64()), ("joined".into(), Some(8)));
    eprintln!("join stamp of cost 8 took {} s", j["stamp_seconds"]);

    // Alice's post reaches the stock member; the group is named as the cache knows it.
    let p = ok(&alice, port, &["post", "Open Mesh", "hello from alice"])?;
    assert_eq!(s(&p, "via"), "link");
    let inbox = peer.call(json!({"cmd": "inbox", "as": "bob", "contains": "hello from alice", "timeout": 30}))?;
    let got = inbox["messages"].as_array().ok_or("messages")?;
    assert!(got.iter().any(|m| String::from_utf8_lossy(&hex::decode(s(m, "content")).unwrap_or_default()).contains("hello from alice")), "bob got {got:?}");

    // Bob's post shows up in `client watch`.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_meshgroup"))
        .args(["--json", "client", "--data-dir"])
        .arg(&alice)
        .args(["--tcp", &format!("127.0.0.1:{port}"), "watch", "Open Mesh", "--count", "1", "--secs", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().ok_or("stdout")?).lines();
    let first: Value = serde_json::from_str(&lines.next().ok_or("watch printed nothing")??)?;
    assert_eq!(s(&first, "group"), "Open Mesh");
    let lxmf = s(&open, "lxmf_destination_hash");
    let sent = peer.call(json!({"cmd": "send", "as": "bob", "dest": lxmf, "content": hex::encode("hi from bob")}))?;
    assert_eq!(sent["delivered"], true);
    let live: Value = serde_json::from_str(&lines.next().ok_or("watch ended without the message")??)?;
    assert_eq!((s(&live, "text"), s(&live, "sender_name"), s(&live, "kind")), ("hi from bob".into(), "bob".into(), "message".into()));
    assert!(watch.wait()?.success());

    // History syncs incrementally: the first sync takes both posts, the next only what is new.
    let h = ok(&alice, port, &["history", "Open Mesh"])?;
    assert_eq!(texts(&h), ["hello from alice", "hi from bob"]);
    for text in ["two", "three", "four", "five"] {
        peer.call(json!({"cmd": "send", "as": "bob", "dest": lxmf, "content": hex::encode(text)}))?;
    }
    let h = ok(&alice, port, &["history", "Open Mesh"])?;
    assert_eq!(h["synced"]["fetched"], 4, "only the four new posts travel, over two pages: {h}");
    assert_eq!(texts(&h).len(), 6);
    let h = ok(&alice, port, &["history", "Open Mesh"])?;
    assert_eq!(h["synced"]["fetched"], 0);

    // A deletion that happens later turns the cached copy into a tombstone.
    let bobs = h["messages"].as_array().ok_or("messages")?.iter().find(|m| s(m, "text") == "two").ok_or("two")?["id"].as_i64().ok_or("id")?;
    peer.request("b", "/api/v1/messages/delete", &pb::DeleteMessageRequest { id: bobs })?.ok::<pb::Ack>()?;
    let h = ok(&alice, port, &["history", "Open Mesh"])?;
    assert_eq!(h["synced"]["tombstones"], 1);
    let gone = h["messages"].as_array().ok_or("messages")?.iter().find(|m| m["id"] == bobs).ok_or("tombstone")?.clone();
    assert_eq!((gone["deleted"].as_bool(), s(&gone, "text")), (Some(true), String::new()));

    // A post as LXMF (no link) reaches the group and the stock member too.
    let p = ok(&alice, port, &["post", "Open Mesh", "sent as lxmf", "--lxmf"])?;
    assert_eq!((s(&p, "via"), p["delivered"].as_bool()), ("lxmf".into(), Some(true)));
    peer.call(json!({"cmd": "inbox", "as": "bob", "contains": "sent as lxmf", "timeout": 30}))?;
    let h = ok(&alice, port, &["history", "Open Mesh"])?;
    assert_eq!(texts(&h).last().map(String::as_str), Some("sent as lxmf"));

    // The groups heard of, with their announces; the members the server lists.
    let groups = ok(&alice, port, &["groups"])?;
    let names: Vec<String> = groups.as_array().ok_or("groups")?.iter().map(|g| s(g, "name")).collect();
    assert!(names.contains(&"Open Mesh".to_owned()) && names.contains(&"Stamped".to_owned()), "{names:?}");
    let members = ok(&alice, port, &["members", "Open Mesh"])?;
    let names: Vec<String> = members.as_array().ok_or("members")?.iter().map(|m| s(m, "display_name")).collect();
    assert_eq!(names, ["bob", "alice"]);
    Ok(())
}

/// A running server with a private group whose private name is `private_name`. Alice is made an
/// approver by the operator (her client knows the group); carol asks to join with `note`, and
/// sees only the public name. Returns the server, the group's destination, both data dirs and
/// both profiles.
fn carol_asks_to_join(private_name: &str, note: &str) -> R<(Server, String, PathBuf, PathBuf, Value, Value)> {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Hidden", "--private", "--private-name", private_name])?;
    server.start()?;
    let port = server.rns_port;
    let (alice, carol) = (server.dir.join("alice"), server.dir.join("carol"));
    let dest = s(&g, "group_destination_hash");
    let a = ok(&alice, port, &["profile", "--name", "alice"])?;
    server.cli(&["member", "add", &dest, &s(&a, "identity_hash"), "--name", "alice", "--rights", "approve"])?;
    ok(&alice, port, &["join", &dest])?;
    let c = ok(&carol, port, &["profile", "--name", "carol"])?;
    let j = ok(&carol, port, &["join", &dest, "--note", note])?;
    assert_eq!((s(&j, "state"), s(&j, "group")), ("requested".into(), "Private Group".into()));
    Ok((server, dest, alice, carol, a, c))
}

#[test]
fn a_private_group_is_approved_through_client_approve() -> R {
    let (server, dest, alice, carol, a, c) = carol_asks_to_join("Cottle Family Chat", "it's me")?;
    let port = server.rns_port;

    // Carol holds no right: refused before any request, in one line.
    let err = refused(&carol, port, &["approve", &dest, &s(&c, "identity_hash")])?;
    assert!(err.contains("approve right"), "{err}");

    let reqs = ok(&alice, port, &["requests", &dest])?;
    assert_eq!(
        reqs.as_array().map(|r| r.iter().map(|x| (s(x, "display_name"), s(x, "note"))).collect::<Vec<_>>()),
        Some(vec![("carol".into(), "it's me".into())])
    );
    ok(&alice, port, &["approve", &dest, &s(&c, "identity_hash")])?;
    assert_eq!(ok(&alice, port, &["requests", &dest])?, json!([]));

    // Once approved, carol sees the private name.
    let j = ok(&carol, port, &["join", &dest])?;
    assert_eq!((s(&j, "state"), s(&j, "group")), ("already a member".into(), "Cottle Family Chat".into()));
    let groups = ok(&carol, port, &["groups"])?;
    assert_eq!(
        groups.as_array().and_then(|g| g.iter().find(|x| s(x, "group_destination_hash") == dest)).map(|x| s(x, "name")),
        Some("Cottle Family Chat".into())
    );
    // A member without the kick right is refused by the client; the server is never asked.
    let err = refused(&carol, port, &["kick", &dest, &s(&a, "identity_hash")])?;
    assert!(err.contains("kick right"), "{err}");
    Ok(())
}

#[test]
fn bad_input_gets_one_clear_line_and_leaves_the_cache_consistent() -> R {
    let (server, g, alice) = alice_joins("Steady")?;
    let port = server.rns_port;
    ok(&alice, port, &["post", "Steady", "kept"])?;
    ok(&alice, port, &["history", "Steady"])?;

    let err = refused(&alice, port, &["history", "No Such Group"])?;
    assert!(err.contains("unknown group"), "{err}");
    let err = refused(&alice, port, &["history", "Steady", "-n", "x"])?;
    assert!(err.contains("invalid value"), "{err}");
    let err = refused(&alice, port, &["kick", "Steady", "not-a-hash"])?;
    assert!(err.contains("malformed identity hash"), "{err}");
    let err = refused(&alice, port, &["notify", "Steady", "loud"])?;
    assert!(err.contains("full, short or none"), "{err}");

    // A group nobody serves: no path, a clear line, and the cache untouched.
    let err = refused(&alice, port, &["--timeout", "2", "history", &hex::encode([0x42u8; 16])])?;
    assert!(err.contains("unreachable"), "{err}");

    // An unreachable server: the cache still answers offline.
    let dead = common::free_port()?;
    let err = refused(&alice, dead, &["--timeout", "2", "history", "Steady"])?;
    assert!(err.contains("unreachable"), "{err}");
    let h = ok(&alice, dead, &["history", "Steady", "--offline"])?;
    assert_eq!(texts(&h), ["kept"]);

    // A destination that answers garbage: refused as malformed, nothing cached from it.
    let (fake_port, fake) = fake_group(b"\xff\xff\xff\xff")?;
    let err = refused(&alice, fake_port, &["history", &hex::encode(fake)])?;
    assert!(err.contains("malformed response"), "{err}");
    let h = ok(&alice, dead, &["history", "Steady", "--offline"])?;
    assert_eq!(texts(&h), ["kept"]);
    let err = refused(&alice, dead, &["history", &hex::encode(fake), "--offline"])?;
    assert!(err.contains("nothing cached"), "{err}");

    // A refused right from the server itself (FORBIDDEN): deleting someone else's message.
    let bob = server.dir.join("bob");
    ok(&bob, port, &["join", &s(&g, "group_destination_hash"), "--name", "bob"])?;
    let id = ok(&bob, port, &["history", &s(&g, "group_destination_hash")])?["messages"][0]["id"].as_i64().ok_or("id")?;
    let err = refused(&bob, port, &["delete", &s(&g, "group_destination_hash"), &id.to_string()])?;
    assert!(err.contains("FORBIDDEN"), "{err}");
    assert_eq!(texts(&ok(&bob, port, &["history", &s(&g, "group_destination_hash")])?), ["kept"]);
    Ok(())
}

/// A tmux session, killed on drop.
struct Tmux(String);

impl Tmux {
    /// Opens `meshgroup client ui` for the client in `data_dir`, in a 160x40 terminal.
    fn ui(name: &str, data_dir: &std::path::Path, port: u16) -> R<Self> {
        let tmux = Tmux(common::unique(name)?);
        let command = format!("{} client --data-dir {} --tcp 127.0.0.1:{port} ui", env!("CARGO_BIN_EXE_meshgroup"), data_dir.display());
        assert!(Command::new("tmux").args(["new-session", "-d", "-s", &tmux.0, "-x", "160", "-y", "40", &command]).status()?.success());
        Ok(tmux)
    }

    fn keys(&self, keys: &[&str]) -> R {
        let ok = Command::new("tmux").args(["send-keys", "-t", &self.0]).args(keys).status()?.success();
        if ok { Ok(()) } else { Err("tmux send-keys failed".into()) }
    }

    fn screen(&self) -> R<String> {
        Ok(String::from_utf8_lossy(&Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]).output()?.stdout).into_owned())
    }

    /// Types `line`, sends it, and waits for the screen to show `said`.
    fn say(&self, line: &str, said: &str) -> R<String> {
        self.keys(&["-l", line])?;
        self.keys(&["Enter"])?;
        self.wait_for(said)
    }

    fn wait_for(&self, what: &str) -> R<String> {
        common::poll_secs(40, &format!("the screen shows {what:?}"), || Ok(self.screen().ok().filter(|s| s.contains(what))))
            .map_err(|e| format!("{e}; the screen:\n{}", self.screen().unwrap_or_default()).into())
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["has-session", "-t", &self.0]).status().is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
    }
}

#[test]
fn the_tui_sends_a_message_and_shows_a_python_members_answer() -> R {
    let mut server = Server::new()?;
    let alpha = server.create_group(&["--name", "Alpha"])?;
    let open = server.create_group(&["--name", "Open Mesh"])?;
    server.start()?;
    let port = server.rns_port;
    let alice = server.dir.join("alice");
    let mut peer = bob_joins(port, &open)?;
    ok(&alice, port, &["join", &s(&alpha, "group_destination_hash"), "--name", "alice"])?;
    ok(&alice, port, &["join", &s(&open, "group_destination_hash")])?;

    // A person opens the UI in a terminal, picks the group, types a message and presses Enter.
    let tmux = Tmux::ui("tui", &alice, port)?;
    tmux.wait_for("Groups")?;
    for _ in 0..3 {
        if tmux.screen()?.contains("┌Open Mesh─") {
            break;
        }
        tmux.keys(&["Down"])?;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    tmux.wait_for("┌Open Mesh─")?;
    tmux.wait_for("bob")?; // the member list, synced
    let screen = tmux.say("typed in the tui", "acknowledged #")?;
    assert!(screen.contains("alice: typed in the tui"), "{screen}");
    // Fanned out to the stock member ...
    peer.call(json!({"cmd": "inbox", "as": "bob", "contains": "typed in the tui", "timeout": 30}))?;
    // ... whose answer comes back to the UI live.
    let lxmf = s(&open, "lxmf_destination_hash");
    peer.call(json!({"cmd": "send", "as": "bob", "dest": lxmf, "content": hex::encode("bob answers")}))?;
    tmux.wait_for("bob: bob answers")?;
    tmux.keys(&["Escape"])?;
    common::poll_secs(10, "the UI exits on Esc", || Ok((!tmux.alive()).then_some(())))?;
    Ok(())
}

/// An approver works the join-request queue from the UI: the input's title lists what their
/// rights allow, and `/approve 1` lets the first requester in.
#[test]
fn an_approver_lets_a_requester_in_from_the_tui() -> R {
    let (server, dest, alice, carol, _, _) = carol_asks_to_join("Back Room", "")?;
    let port = server.rns_port;

    let tmux = Tmux::ui("tui-approve", &alice, port)?;
    let screen = tmux.wait_for("1. carol")?;
    assert!(screen.contains("/approve N, /reject N") && !screen.contains("/kick"), "only the approve right's commands are offered:\n{screen}");
    tmux.say("/approve 1", "approved carol")?;
    common::poll_secs(20, "the queue empties", || Ok(tmux.screen().ok().filter(|s| !s.contains("Join requests")).map(|_| ())))?;
    tmux.keys(&["Escape"])?;
    let j = ok(&carol, port, &["join", &dest])?;
    assert_eq!((s(&j, "state"), s(&j, "group")), ("already a member".into(), "Back Room".into()));
    Ok(())
}

/// An owner runs the group from the UI: grants a right it holds (the server refuses one it lacks),
/// renames the group, raises the join cost, bans and unbans, each through the same call as the
/// CLI, and the server's rows show each change.
#[test]
fn an_owner_grants_renames_and_sets_from_the_tui() -> R {
    let mut server = Server::new()?;
    let g = server.create_group(&["--name", "Town Square"])?;
    server.start()?;
    let port = server.rns_port;
    let dest = s(&g, "group_destination_hash");
    let (alice, bob) = (server.dir.join("alice"), server.dir.join("bob"));
    let a = ok(&alice, port, &["profile", "--name", "alice"])?;
    server.cli(&["member", "add", &dest, &s(&a, "identity_hash"), "--name", "alice", "--rights", "permissions,rename,settings,ban"])?;
    ok(&alice, port, &["join", &dest])?;
    let bob_hash = s(&ok(&bob, port, &["profile", "--name", "bob"])?, "identity_hash");
    ok(&bob, port, &["join", &dest])?;

    let tmux = Tmux::ui("tui-owner", &alice, port)?;
    let screen = tmux.wait_for("bob")?;
    assert!(screen.contains("/grant NAME RIGHTS") && !screen.contains("/approve"), "only the rights held are offered:\n{screen}");
    for (line, said) in [
        ("/grant bob kick", "cannot grant or revoke rights you do not hold"),
        ("/grant bob rename", "bob now holds rename"),
        ("/rename Town Hall", "renamed to Town Hall"),
        ("/set join-cost 2", "set join-cost 2"),
    ] {
        tmux.say(line, said)?;
    }
    let members = server.cli(&["member", "list", &dest])?;
    let bob_row = members.as_array().and_then(|m| m.iter().find(|m| m["display_name"] == "bob")).ok_or("bob listed")?;
    assert_eq!(bob_row["rights"], json!(["rename"]));
    tmux.say("/ban bob spam", "banned bob")?;
    tmux.say(&format!("/unban {bob_hash}"), &format!("unbanned {bob_hash}"))?;
    tmux.keys(&["Escape"])?;
    assert_eq!(ok(&bob, port, &["join", &dest])?["state"], "joined", "the ban is lifted");
    let shown = server.cli(&["group", "show", &dest])?;
    assert_eq!((&shown["name"], &shown["join_stamp_cost"]), (&json!("Town Hall"), &json!(2)));
    Ok(())
}

/// The default way in: the client attaches to the user's rnsd as a shared-instance client (the
/// Unix socket `rns/NAME`), like the server beside it.
#[test]
fn the_client_reaches_a_group_through_the_users_rnsd() -> R {
    use common::{Daemon, free_port, tcp_server_iface, unique, wait_port};
    let name = unique("cli-rnsd")?;
    let hub_port = free_port()?;
    let work = std::env::temp_dir().join(&name);
    let config = format!(
        "[reticulum]\n  enable_transport = False\n  share_instance = Yes\n  instance_name = {name}\n  panic_on_interface_error = No\n[logging]\n  loglevel = 4\n[interfaces]\n{}",
        tcp_server_iface(hub_port)
    );
    let rnsd = Daemon::rnsd(&work, &config)?;
    wait_port(hub_port, std::time::Duration::from_secs(20)).map_err(|e| format!("{e}; rnsd log:\n{}", rnsd.log()))?;
    let mut server = Server::new()?;
    server.interfaces = Some(format!("[{{type=\"shared_instance\",instance_name=\"{name}\"}}]"));
    let g = server.create_group(&["--name", "Via rnsd"])?;
    server.start()?;
    let dir = server.dir.join("dora");
    let run = |args: &[&str]| -> R<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_meshgroup"))
            .args(["--json", "client", "--data-dir"])
            .arg(&dir)
            .args(["--instance", &name, "--timeout", "30"])
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(format!("client {args:?}: {}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log()).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let j = run(&["join", &s(&g, "group_destination_hash"), "--name", "dora"])?;
    assert_eq!(s(&j, "state"), "joined");
    run(&["post", "Via rnsd", "through the shared instance"])?;
    assert_eq!(texts(&run(&["history", "Via rnsd"])?), ["through the shared instance"]);
    Ok(())
}

/// Moves the cached group `from` to the destination `to` in a client's cache, keeping its
/// `lxmf.delivery` and key: as if its link destination had gone out of reach.
fn move_cached_group(cache: &Path, from: &str, to: &str) -> R {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let db = Database::connect(format!("sqlite://{}", cache.display())).await?;
        let sql = format!("UPDATE cached_group SET dest = x'{to}' WHERE dest = x'{from}'");
        let done = db.execute_raw(Statement::from_string(DbBackend::Sqlite, sql)).await?;
        assert_eq!(done.rows_affected(), 1, "the cache holds the group");
        db.close().await?;
        Ok(())
    })
}

#[test]
fn a_post_goes_as_lxmf_when_no_link_can_be_made() -> R {
    let (server, g, alice) = alice_joins("Link Down")?;
    // Nobody answers for this destination, so no link can be made; the group's lxmf.delivery
    // is still where the cache says.
    let nowhere = "00112233445566778899aabbccddeeff";
    move_cached_group(&alice.join("cache.db"), &s(&g, "group_destination_hash"), nowhere)?;
    let p = ok(&alice, server.rns_port, &["--timeout", "5", "post", nowhere, "no link today"])?;
    assert_eq!((s(&p, "via"), p["delivered"].as_bool()), ("lxmf".into(), Some(true)), "{p}");
    // The server stored it as the group's post.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stored: R<Vec<meshgroup::store::Message>> = rt.block_on(async {
        let store = meshgroup::store::Store::open(&server.db_url).await?;
        let q = meshgroup::store::HistoryQuery { limit: 5, before_id: None, after_id: None, order: meshgroup::store::Order::NewestFirst, events_after: None };
        Ok(store.history(g["id"].as_i64().ok_or("id")?, q).await?)
    });
    assert_eq!(stored?.first().map(|m| m.content.clone()), Some(b"no link today".to_vec()));
    Ok(())
}

/// `post --propagate`: the post is deposited on a real lxmd, and the group collects it from there
/// on its next inbox sync.
#[test]
fn a_propagated_post_reaches_the_group_through_lxmd() -> R {
    let (_hub, _lxmd, hub_port, pn) = common::hub_and_node()?;
    let mut server = Server::new()?;
    server.interfaces = Some(format!("[{{type=\"tcp_client\",target=\"127.0.0.1:{hub_port}\"}}]"));
    server.extra_env.extend([("MESHGROUP_PROPAGATION__NODE".to_owned(), pn.clone()), ("MESHGROUP_PROPAGATION__SYNC_INTERVAL_SECS".to_owned(), "5".to_owned())]);
    let g = server.create_group(&["--name", "Far Away"])?;
    server.start()?;
    let alice = server.dir.join("alice");
    ok(&alice, hub_port, &["--timeout", "40", "join", &s(&g, "group_destination_hash"), "--name", "alice"])?;
    let p = ok(&alice, hub_port, &["--timeout", "40", "--propagation-node", &pn, "post", "Far Away", "left on the node", "--propagate"])?;
    assert_eq!(s(&p, "via"), "propagation");
    common::poll_secs(90, "the group collected the post", || {
        let h = ok(&alice, hub_port, &["--timeout", "40", "history", "Far Away"])?;
        Ok(texts(&h).contains(&"left on the node".to_owned()).then_some(()))
    })?;
    Ok(())
}
