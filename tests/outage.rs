//! Issue 13: a database outage under posts. PostgreSQL stops in the middle of a stream of direct
//! LXMF posts, which the transport proves on receipt; every proven post is in the history
//! afterwards and reached each member exactly once. The cluster is a private one (initdb in a
//! temporary directory, its own port), so the shared server the other tests use stays up.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Peer, R, Server, free_port, s};
use serde_json::json;

/// A throw-away PostgreSQL cluster, stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// `None` when this machine has no PostgreSQL server binaries (the test then says so and passes).
    fn start() -> R<Option<Self>> {
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).find(|b| b.join("initdb").exists()))
        else {
            return Ok(None);
        };
        let dir = std::env::temp_dir().join(format!("meshgroup-pg-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let c = Cluster { bin, dir, port: free_port()? };
        // initdb refuses to run as root; the cluster then belongs to `postgres`.
        if is_root() {
            run(Command::new("chown").arg("postgres").arg(&c.dir))?;
        }
        run(c.as_owner("initdb").arg("-D").arg(c.data()).args(["-A", "trust", "-U", "postgres"]))?;
        c.up()?;
        Ok(Some(c))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_owner(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn up(&self) -> R {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        run(self.as_owner("pg_ctl").arg("-D").arg(self.data()).args(["-w", "-l"]).arg(self.dir.join("log")).args(["-o", &opts, "start"]))
    }

    fn down(&self) -> R {
        run(self.as_owner("pg_ctl").arg("-D").arg(self.data()).args(["-w", "-m", "fast", "stop"]))
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn run(c: &mut Command) -> R {
    let out = c.output()?;
    if !out.status.success() {
        return Err(format!("{c:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// Contents of the group's stored posts, read straight from the database.
fn stored(db_url: &str, group: i64) -> R<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = meshgroup::store::Store::open(db_url).await?;
        let rows = store.history(group, meshgroup::store::HistoryQuery { limit: 200, ..Default::default() }).await?;
        store.close().await;
        Ok(rows.into_iter().map(|m| String::from_utf8_lossy(&m.content).into_owned()).collect())
    })
}

/// Posts the server's journal holds, as its metrics say.
fn journal_entries(server: &Server) -> R<f64> {
    Ok(common::metric(&server.metrics()?, "meshgroup_journal_posts"))
}

#[test]
fn direct_posts_proven_during_a_postgres_outage_are_stored_and_fanned_out_once() -> R {
    let Some(pg) = Cluster::start()? else {
        eprintln!("no PostgreSQL server binaries here; the outage test did not run");
        return Ok(());
    };
    let mut server = Server::new()?;
    server.db_url = pg.url();
    let group = server.create_group(&["--name", "Outage"])?;
    let gid = group["id"].as_i64().ok_or("id")?;
    server.start()?;
    let mut peer = Peer::connect(server.rns_port)?;
    let members: Vec<String> =
        peer.call(json!({"cmd": "members", "n": 3}))?["members"].as_array().ok_or("members")?.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect();
    peer.call(json!({"cmd": "router", "as": "poster"}))?;
    let poster = peer.identity("poster")?;
    for (i, m) in members.iter().chain(std::iter::once(&poster)).enumerate() {
        server.cli(&["member", "add", &gid.to_string(), m, "--name", &format!("m{i}")])?;
    }
    let lxmf = s(&group, "lxmf_destination_hash");
    let mut proven = Vec::new();
    let send = |peer: &mut Peer, proven: &mut Vec<String>, text: String| -> R {
        let sent = peer.call(json!({"cmd": "send", "as": "poster", "dest": lxmf, "content": hex::encode(&text), "method": "direct"}))?;
        if sent["delivered"] == true {
            proven.push(text);
        }
        Ok(())
    };
    send(&mut peer, &mut proven, "before the outage".into())?;
    pg.down()?;
    for i in 0..5 {
        send(&mut peer, &mut proven, format!("during the outage {i}"))?;
    }
    assert!(proven.len() >= 4, "the transport proves direct posts with the database away: {proven:?}");
    assert!(journal_entries(&server)? > 0.0, "the posts wait in the journal");
    pg.up()?;
    send(&mut peer, &mut proven, "after the outage".into())?;

    let all = common::poll_secs(90, "every proven post stored", || {
        let got = stored(&server.db_url, gid)?;
        Ok(proven.iter().all(|p| got.contains(p)).then_some(got))
    })?;
    assert_eq!(all.len(), proven.len(), "each proven post stored once: {all:?}");
    let inbox = peer.call(json!({"cmd": "member_inbox", "unique": proven.len(), "timeout": 90}))?;
    for m in &members {
        let got = inbox["members"][m].as_array().ok_or("inbox")?;
        let unique: std::collections::HashSet<String> = got.iter().map(|g| s(g, "hash")).collect();
        assert_eq!(unique.len(), proven.len(), "member {m} has each post exactly once");
    }
    common::poll_secs(30, "the journal to empty", || Ok((journal_entries(&server)? == 0.0).then_some(())))?;
    eprintln!("{} posts proven, {} during a PostgreSQL outage: all stored and fanned out once", proven.len(), proven.len() - 2);
    Ok(())
}
