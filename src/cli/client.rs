//! `meshgroup client …`: the member's commands over [`crate::client`]. Each prints a table, or one
//! JSON document with `--json` (`watch` prints one line per message as it arrives, then a summary).
//! Errors are one line, `meshgroup: …`, with exit code 2 (1 for a failure of the local cache).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{CliError, Output, ts};
use crate::client::{Client, ClientConfig, ClientError, Posted, Via};
use crate::domain::Rights;
use crate::store::cache::CachedMessage;
use crate::transport::interfaces::InterfaceConfig;
use crate::wire::identity::parse_hash;
use crate::wire::proto as pb;

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The client's data directory: its identity (0600) and its cache.
    #[arg(long, env = "MESHGROUP_CLIENT_DIR", default_value = "client-data")]
    pub data_dir: PathBuf,
    /// Reach the network through a TCP server interface (HOST:PORT) instead of the local rnsd.
    #[arg(long)]
    pub tcp: Option<String>,
    /// The rnsd shared instance to attach to (the Unix socket `rns/NAME`).
    #[arg(long, default_value = "default")]
    pub instance: String,
    /// Attach to an rnsd with `shared_instance_type = tcp` on this port instead of the Unix socket.
    #[arg(long)]
    pub instance_port: Option<u16>,
    /// Seconds to wait for a path, a link or an answer.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// The propagation node (its lxmf.propagation hash) for `post --propagate`; default: the last heard.
    #[arg(long)]
    pub propagation_node: Option<String>,
    #[command(subcommand)]
    pub command: ClientCmd,
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Show this client's identity, or set the display name members see.
    Profile {
        #[arg(long)]
        name: Option<String>,
    },
    /// A server's directory of groups (SERVER: its meshchat.groupserver hash).
    Directory {
        server: String,
        /// Case-insensitive part of the name.
        #[arg(long, default_value = "")]
        search: String,
        #[arg(long, default_value_t = 0)]
        offset: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Sort by latest activity instead of members.
        #[arg(long)]
        by_activity: bool,
    },
    /// Groups this client has heard of (announces, directories, joins), from the cache.
    Groups {
        /// Listen this many seconds for announces first.
        #[arg(long, default_value_t = 0)]
        listen: u64,
    },
    /// Join a group (paying its join stamp); a private group files a request.
    Join {
        group: String,
        /// The display name to join under (default: the profile's).
        #[arg(long)]
        name: Option<String>,
        /// For a private group: a note to the approvers.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Leave a group.
    Leave { group: String },
    /// The group's members.
    Members { group: String },
    /// The group's history: synced incrementally into the cache, then shown from it.
    History {
        group: String,
        #[arg(short = 'n', default_value_t = 20)]
        n: u64,
        /// Show the cache only, without syncing (works offline).
        #[arg(long)]
        offline: bool,
    },
    /// Post a message.
    Post {
        group: String,
        text: String,
        /// Send as LXMF to the group's lxmf.delivery, not over the link API.
        #[arg(long, conflicts_with = "propagate")]
        lxmf: bool,
        /// Deposit on a propagation node for the group to collect.
        #[arg(long)]
        propagate: bool,
    },
    /// Print the group's messages as they are fanned out to this client.
    Watch {
        group: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        secs: Option<u64>,
    },
    /// How new posts reach you: full, short or none.
    Notify { group: String, mode: String },
    /// Pending join requests (approve right).
    Requests { group: String },
    /// Let a requester in (approve right).
    Approve { group: String, identity: String },
    /// Turn a request down (approve right).
    Reject { group: String, identity: String },
    /// Remove a member (kick right).
    Kick { group: String, identity: String },
    /// Ban an identity (ban right).
    Ban {
        group: String,
        identity: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a ban (ban right).
    Unban { group: String, identity: String },
    /// Delete a message: your own, or anyone's with the delete right.
    Delete { group: String, id: i64 },
    /// Give a member rights (permissions right), e.g. `kick,ban`.
    Grant { group: String, identity: String, rights: String },
    /// Take rights from a member (permissions right).
    Revoke { group: String, identity: String, rights: String },
    /// Rename the group (rename right).
    Rename {
        group: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        private_name: Option<String>,
    },
    /// Change the group's settings (settings right).
    Settings {
        group: String,
        #[arg(long, conflicts_with = "public")]
        private: bool,
        #[arg(long)]
        public: bool,
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=254))]
        join_stamp_cost: Option<u32>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=254))]
        post_stamp_cost: Option<u32>,
        #[arg(long)]
        history_public: Option<bool>,
        #[arg(long)]
        listed: Option<bool>,
    },
    /// The terminal UI: groups, history, members, join requests, an input line.
    Ui {
        /// The group to open first.
        group: Option<String>,
    },
    /// Create a group on a server (SERVER: its meshchat.groupserver hash); you become its founder.
    Create {
        server: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        private: bool,
        #[arg(long, default_value = "")]
        private_name: String,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=254))]
        join_stamp_cost: u32,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=254))]
        post_stamp_cost: u32,
    },
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e.exit_code() {
            2 => CliError::Input(e.to_string()),
            _ => CliError::Failure(e.to_string()),
        }
    }
}

/// A member's terminal shows the one-line result: warnings of ours only, nothing of the crate's
/// (it warns on every failed reconnect, and logs an error for its workers cancelled at exit).
/// `MESHGROUP_LOG_FILTER` still overrides both.
pub fn quiet_logs(log: &mut crate::config::LogConfig) {
    log.level = "warn".into();
    log.transport_level = "off".into();
}

fn hash_arg(what: &str, s: &str) -> Result<[u8; 16], CliError> {
    parse_hash(s).ok_or_else(|| CliError::Input(format!("malformed {what} hash: {s}")))
}

fn message_json(m: &CachedMessage) -> Value {
    json!({
        "id": m.id,
        "sender": hex::encode(&m.sender),
        "sender_name": m.sender_name,
        "timestamp_s": m.timestamp_s,
        "text": String::from_utf8_lossy(&m.content),
        "deleted": m.deleted,
    })
}

fn message_row(m: &CachedMessage) -> Vec<String> {
    let text = if m.deleted { "(deleted)".to_owned() } else { String::from_utf8_lossy(&m.content).into_owned() };
    vec![m.id.to_string(), ts((m.timestamp_s * 1000.0) as i64), m.sender_name.clone(), text]
}

fn done(json: Value, text: String) -> Output {
    Output::message(json, text)
}

/// Runs one client command.
pub async fn run(args: ClientArgs, as_json: bool) -> Result<Output, CliError> {
    let interfaces = vec![match (&args.tcp, args.instance_port) {
        (Some(target), _) => InterfaceConfig::TcpClient { target: target.clone() },
        (None, port) => InterfaceConfig::SharedInstance { instance_name: args.instance.clone(), tcp_port: port },
    }];
    let propagation_node = args.propagation_node.as_deref().map(|h| hash_arg("propagation node", h)).transpose()?;
    let cfg = ClientConfig { data_dir: args.data_dir, interfaces, timeout: Duration::from_secs(args.timeout.max(1)), propagation_node };
    // reticulum-rs prints link closes on stdout: it goes to /dev/null while the node runs, and
    // our own lines go to the real stdout.
    let out = Stdout::quiet();
    let result = command(cfg, args.command, as_json, &out).await;
    out.restore();
    result
}

async fn command(cfg: ClientConfig, cmd: ClientCmd, as_json: bool, out: &Stdout) -> Result<Output, CliError> {
    let mut client = Client::start(cfg).await?;
    let incoming = client.incoming();
    let c = &client;
    let group = |key: String| async move { c.resolve(&key).await.map_err(CliError::from) };
    let id_arg = |s: &str| hash_arg("identity", s);
    Ok(match cmd {
        ClientCmd::Ui { group: key } => {
            let first = match key {
                Some(k) => Some(group(k).await?),
                None => None,
            };
            let tty = out.writer().ok_or_else(|| CliError::Failure("no terminal to draw on".into()))?;
            return super::ui::run(client, first, tty).await;
        }
        ClientCmd::Profile { name } => {
            if let Some(n) = name {
                c.set_display_name(&n).await?;
            }
            let name = c.display_name().await?;
            let json = json!({"identity_hash": hex::encode(c.identity_hash()), "lxmf_hash": hex::encode(c.lxmf_hash()), "display_name": name});
            Output {
                headers: vec!["identity", "lxmf.delivery", "name"],
                rows: vec![vec![format!("<{}>", hex::encode(c.identity_hash())), format!("<{}>", hex::encode(c.lxmf_hash())), name]],
                json,
            }
        }
        ClientCmd::Directory { server, search, offset, limit, by_activity } => {
            let sort = if by_activity { pb::DirectorySort::Activity } else { pb::DirectorySort::Members };
            let req = pb::DirectoryRequest { offset, limit, sort: sort as i32, name_filter: search };
            let r = c.directory(hash_arg("server", &server)?, req).await?;
            let entries: Vec<Value> = r
                .groups
                .iter()
                .map(|g| {
                    json!({"name": g.name, "group_destination_hash": hex::encode(&g.group_destination), "lxmf_destination_hash": hex::encode(&g.lxmf_destination),
                           "private": g.visibility == pb::Visibility::Private as i32, "members": g.member_count, "join_stamp_cost": g.join_stamp_cost, "post_stamp_cost": g.post_stamp_cost})
                })
                .collect();
            let rows = r
                .groups
                .iter()
                .map(|g| vec![g.name.clone(), g.member_count.to_string(), g.join_stamp_cost.to_string(), format!("<{}>", hex::encode(&g.group_destination))])
                .collect();
            Output {
                json: json!({"total": r.total, "offset": offset, "groups": entries}),
                headers: vec!["name", "members", "join cost", "meshchat.group"],
                rows,
            }
        }
        ClientCmd::Groups { listen } => {
            if listen > 0 {
                tokio::time::sleep(Duration::from_secs(listen)).await;
            }
            let mut json = Vec::new();
            let mut rows = Vec::new();
            for g in c.cache().groups().await? {
                let unread = c.cache().unread(&g.dest).await?;
                let announce = crate::wire::announce::decode_group_announce(&g.announce).ok();
                json.push(json!({
                    "group_destination_hash": hex::encode(g.dest), "lxmf_destination_hash": hex::encode(&g.lxmf_dest), "name": g.name,
                    "private": g.private, "members": g.member_count, "join_stamp_cost": g.join_stamp_cost, "post_stamp_cost": g.post_stamp_cost,
                    "membership": g.membership, "rights": Rights(g.rights).names(), "unread": unread, "heard_at": g.heard_at,
                    "announce": announce.map(|a| json!({"name": a.name, "private": a.visibility == pb::Visibility::Private as i32, "member_count": a.member_count,
                        "join_stamp_cost": a.join_stamp_cost, "post_stamp_cost": a.post_stamp_cost, "api_version": a.api_version})),
                }));
                rows.push(vec![
                    g.name.clone(),
                    if g.membership.is_empty() { "-".into() } else { g.membership.clone() },
                    g.member_count.to_string(),
                    unread.to_string(),
                    format!("<{}>", hex::encode(g.dest)),
                ]);
            }
            Output { json: Value::Array(json), headers: vec!["name", "you", "members", "unread", "meshchat.group"], rows }
        }
        ClientCmd::Join { group: key, name, note } => {
            let dest = group(key).await?;
            let name = match name {
                Some(n) => {
                    c.set_display_name(&n).await?;
                    n
                }
                None => c.display_name().await?,
            };
            // The group needs our key and name to reach us: both travel with the link identify,
            // the announce tells the name to everyone else.
            c.announce().await?;
            let s = c.group(dest).await?;
            let j = s.join(&name, &note).await?;
            let state = match j.state {
                pb::JoinState::Joined => "joined",
                pb::JoinState::AlreadyMember => "already a member",
                pb::JoinState::Requested => "requested",
            };
            let secs = j.stamp_time.as_secs_f64();
            let stamp = if j.stamp_cost > 0 { format!(" (join stamp of cost {} in {:.3} s)", j.stamp_cost, secs) } else { String::new() };
            done(
                json!({"state": state, "group": j.name, "stamp_cost": j.stamp_cost, "stamp_seconds": secs, "group_destination_hash": hex::encode(dest)}),
                format!("{state}: {}{stamp}", j.name),
            )
        }
        ClientCmd::Leave { group: key } => {
            let dest = group(key).await?;
            c.group(dest).await?.leave().await?;
            done(json!({"left": hex::encode(dest)}), format!("left <{}>", hex::encode(dest)))
        }
        ClientCmd::Members { group: key } => {
            let dest = group(key).await?;
            let members = c.group(dest).await?.members().await?;
            let json = members
                .iter()
                .map(|m| json!({"identity_hash": hex::encode(&m.identity), "display_name": m.display_name, "rights": Rights(m.rights).names(), "joined_at": m.joined_at}))
                .collect();
            let rows =
                members.iter().map(|m| vec![hex::encode(&m.identity), m.display_name.clone(), Rights(m.rights).names().join(","), ts(m.joined_at)]).collect();
            Output { json: Value::Array(json), headers: vec!["identity", "name", "rights", "joined"], rows }
        }
        ClientCmd::History { group: key, n, offline } => {
            let dest = group(key).await?;
            let sync = if offline { None } else { Some(c.group(dest).await?.sync().await?) };
            let messages = c.cached_history(dest, n).await?;
            if let Some(last) = messages.last() {
                c.cache().mark_read(&dest, last.id).await?;
            }
            let json = json!({
                "synced": sync.as_ref().map(|r| json!({"fetched": r.fetched, "tombstones": r.tombstones, "requests": r.requests})),
                "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
            });
            Output { json, headers: vec!["id", "time", "from", "text"], rows: messages.iter().map(message_row).collect() }
        }
        ClientCmd::Post { group: key, text, lxmf, propagate } => {
            let dest = group(key).await?;
            let via = match (lxmf, propagate) {
                (true, _) => Via::Lxmf,
                (_, true) => Via::Propagate,
                _ => Via::Auto,
            };
            match c.post(dest, &text, via).await? {
                Posted::Link { id, duplicate } => done(json!({"via": "link", "id": id, "duplicate": duplicate}), format!("posted as #{id}")),
                Posted::Lxmf { message_id, delivered } => {
                    let json = json!({"via": "lxmf", "message_id": hex::encode(message_id), "delivered": delivered});
                    if !delivered {
                        return Err(CliError::Input(format!("sent as LXMF {}, but the group did not confirm it in time", hex::encode(message_id))));
                    }
                    done(json, format!("delivered as LXMF {}", hex::encode(message_id)))
                }
                Posted::Propagated { message_id } => done(
                    json!({"via": "propagation", "message_id": hex::encode(message_id)}),
                    format!("deposited on the propagation node as {}", hex::encode(message_id)),
                ),
            }
        }
        ClientCmd::Watch { group: key, count, secs } => {
            let dest = group(key).await?;
            let mut rx = incoming.ok_or_else(|| CliError::Failure("the live stream is already taken".into()))?;
            c.announce().await?;
            // The fan-out reaches this client's lxmf.delivery; a link makes sure we are a member.
            let info = c.group(dest).await?.info().await?;
            if !info.is_member {
                return Err(CliError::Input(format!("you are not a member of {}: join it first", info.name)));
            }
            out.line(&if as_json {
                json!({"watching": hex::encode(dest), "group": info.name}).to_string()
            } else {
                format!("watching {} (Ctrl-C to stop)", info.name)
            });
            let deadline = secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
            let mut seen = 0usize;
            while count.is_none_or(|n| seen < n) {
                let next = match deadline {
                    Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok().flatten(),
                    None => rx.recv().await,
                };
                let Some(m) = next else { break };
                if m.group != dest {
                    continue;
                }
                seen += 1;
                out.line(&if as_json {
                    let mut j = message_json(&m.message);
                    j["kind"] = m.kind.clone().into();
                    j.to_string()
                } else {
                    format!("[{}] #{} {}: {}", m.group_name, m.message.id, m.message.sender_name, String::from_utf8_lossy(&m.message.content))
                });
            }
            done(json!({"received": seen}), format!("{seen} received"))
        }
        ClientCmd::Notify { group: key, mode } => {
            let mode = match mode.as_str() {
                "full" => pb::NotifyMode::NotifyFull,
                "short" => pb::NotifyMode::NotifyShort,
                "none" => pb::NotifyMode::NotifyNone,
                other => return Err(CliError::Input(format!("notify mode must be full, short or none, not {other}"))),
            };
            let dest = group(key).await?;
            c.group(dest).await?.notify(mode).await?;
            done(json!({"notify": mode.as_str_name()}), format!("notifications: {}", mode.as_str_name()))
        }
        ClientCmd::Requests { group: key } => {
            let dest = group(key).await?;
            let reqs = c.group(dest).await?.join_requests().await?;
            let json = reqs
                .iter()
                .map(
                    |r| json!({"identity_hash": hex::encode(&r.identity_hash), "display_name": r.display_name, "note": r.note, "requested_at": r.requested_at}),
                )
                .collect();
            let rows = reqs.iter().map(|r| vec![hex::encode(&r.identity_hash), r.display_name.clone(), r.note.clone(), ts(r.requested_at)]).collect();
            Output { json: Value::Array(json), headers: vec!["identity", "name", "note", "requested"], rows }
        }
        ClientCmd::Approve { group: key, identity } => {
            let (dest, who) = (group(key).await?, id_arg(&identity)?);
            c.group(dest).await?.decide(who, true).await?;
            done(json!({"approved": hex::encode(who)}), format!("approved {}", hex::encode(who)))
        }
        ClientCmd::Reject { group: key, identity } => {
            let (dest, who) = (group(key).await?, id_arg(&identity)?);
            c.group(dest).await?.decide(who, false).await?;
            done(json!({"rejected": hex::encode(who)}), format!("rejected {}", hex::encode(who)))
        }
        ClientCmd::Kick { group: key, identity } => {
            let (dest, who) = (group(key).await?, id_arg(&identity)?);
            c.group(dest).await?.kick(who).await?;
            done(json!({"kicked": hex::encode(who)}), format!("kicked {}", hex::encode(who)))
        }
        ClientCmd::Ban { group: key, identity, reason } => {
            let (dest, who) = (group(key).await?, id_arg(&identity)?);
            c.group(dest).await?.ban(who, &reason).await?;
            done(json!({"banned": hex::encode(who), "reason": reason}), format!("banned {}", hex::encode(who)))
        }
        ClientCmd::Unban { group: key, identity } => {
            let (dest, who) = (group(key).await?, id_arg(&identity)?);
            c.group(dest).await?.unban(who).await?;
            done(json!({"unbanned": hex::encode(who)}), format!("unbanned {}", hex::encode(who)))
        }
        ClientCmd::Delete { group: key, id } => {
            let dest = group(key).await?;
            c.group(dest).await?.delete(id).await?;
            done(json!({"deleted": id}), format!("deleted #{id}"))
        }
        ClientCmd::Grant { group: key, identity, rights } => change_rights(c, group(key).await?, &identity, &rights, true).await?,
        ClientCmd::Revoke { group: key, identity, rights } => change_rights(c, group(key).await?, &identity, &rights, false).await?,
        ClientCmd::Rename { group: key, name, private_name } => {
            let dest = group(key).await?;
            c.group(dest).await?.rename(name.clone(), private_name.clone()).await?;
            done(json!({"name": name, "private_name": private_name}), "renamed".into())
        }
        ClientCmd::Settings { group: key, private, public, join_stamp_cost, post_stamp_cost, history_public, listed } => {
            let visibility = match (private, public) {
                (true, _) => Some(pb::Visibility::Private as i32),
                (_, true) => Some(pb::Visibility::Public as i32),
                _ => None,
            };
            let dest = group(key).await?;
            let update =
                pb::SettingsUpdate { visibility, join_stamp_cost, post_stamp_cost, history_public, listed, attachment_max_bytes: None, attachment_kinds: None };
            c.group(dest).await?.settings(update).await?;
            done(json!({"updated": hex::encode(dest)}), "settings updated".into())
        }
        ClientCmd::Create { server, name, private, private_name, join_stamp_cost, post_stamp_cost } => {
            let visibility = if private { pb::Visibility::Private } else { pb::Visibility::Public } as i32;
            let req = pb::CreateGroupRequest { name, visibility, private_name, join_stamp_cost, post_stamp_cost, ..Default::default() };
            let e = c.create(hash_arg("server", &server)?, req).await?;
            let dest = hex::encode(&e.group_destination);
            done(
                json!({"name": e.name, "group_destination_hash": dest, "lxmf_destination_hash": hex::encode(&e.lxmf_destination)}),
                format!("created {} <{dest}>", e.name),
            )
        }
    })
}

async fn change_rights(c: &Client, dest: [u8; 16], identity: &str, rights: &str, grant: bool) -> Result<Output, CliError> {
    let who = hash_arg("identity", identity)?;
    let rights = Rights::parse_list(rights).map_err(CliError::Input)?;
    let now = c.group(dest).await?.change_rights(who, rights, grant).await?;
    Ok(done(json!({"identity": hex::encode(who), "rights": now.names()}), format!("{}: {}", hex::encode(who), now.names().join(","))))
}

/// The process's real stdout while fd 1 points at /dev/null (see [`run`]).
struct Stdout {
    saved: Option<std::fs::File>,
}

impl Stdout {
    fn quiet() -> Stdout {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd};
        let _ = std::io::stdout().flush();
        let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else { return Stdout { saved: None } };
        // SAFETY: dup of fd 1 gives a new descriptor we own (or -1); dup2 then points fd 1 at
        // /dev/null, which stays open. Both are plain descriptor calls on open descriptors.
        let saved = unsafe { libc::dup(libc::STDOUT_FILENO) };
        if saved < 0 {
            return Stdout { saved: None };
        }
        if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
            // SAFETY: `saved` is ours and open.
            drop(unsafe { std::fs::File::from_raw_fd(saved) });
            return Stdout { saved: None };
        }
        // SAFETY: `saved` is a descriptor we own; the File closes it.
        Stdout { saved: Some(unsafe { std::fs::File::from_raw_fd(saved) }) }
    }

    /// A handle on the real stdout, for the TUI to draw on.
    fn writer(&self) -> Option<std::fs::File> {
        self.saved.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// One line on the real stdout, at once.
    fn line(&self, text: &str) {
        use std::io::Write;
        match &self.saved {
            Some(f) => {
                let mut f: &std::fs::File = f;
                let _ = writeln!(f, "{text}");
            }
            None => println!("{text}"),
        }
    }

    /// Points fd 1 back at the real stdout, for the command's result.
    fn restore(self) {
        use std::os::fd::AsRawFd;
        if let Some(f) = &self.saved {
            // SAFETY: both descriptors are open; fd 1 becomes a copy of the saved one.
            unsafe { libc::dup2(f.as_raw_fd(), libc::STDOUT_FILENO) };
        }
    }
}
