//! `meshgroup client ui`: the terminal UI over [`crate::client`]. Groups with unread counts on the
//! left, the selected group's history (from the cache) in the middle, its members and, for
//! approvers, the join-request queue on the right, an input line at the bottom.
//!
//! Made for slow links: a send is queued (one at a time, in order) and shown pending until the
//! server acknowledges it; syncs run in the background; the screen is drawn from the cache only,
//! so it never waits for the network. Keys: Up/Down select a group, PageUp/PageDown scroll,
//! Enter sends, Esc or Ctrl-C quits.
//!
//! A line that starts with `/` is an admin action on the selected group, through the same calls
//! as `meshgroup client approve|reject|kick|ban|unban|delete|grant|revoke|rename|settings`; the
//! input's title lists only those the member's rights allow, and `//` sends a line that starts with `/`.

use std::sync::Arc;
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use tokio::sync::mpsc;

use super::{CliError, Output};
use crate::client::{Client, ClientError, Incoming, Posted, Via};
use crate::domain::Rights;
use crate::store::cache::{CachedGroup, CachedMember, CachedMessage};
use crate::wire::proto as pb;

/// Sends waiting for the link; beyond it the input line refuses more.
const SEND_QUEUE: usize = 64;
/// How often the selected group is synced in the background.
const SYNC_EVERY: Duration = Duration::from_secs(10);

enum UiEvent {
    Key(KeyEvent),
    Incoming(Incoming),
    Sent { seq: u64, dest: [u8; 16], result: Result<Done, String> },
    Synced { dest: [u8; 16], rights: Rights, requests: Vec<pb::PendingJoin>, error: Option<String> },
    Tick,
}

/// What a line typed in the input asks for, on the selected group.
#[derive(Debug, PartialEq)]
enum Action {
    Post(String),
    /// Approve (`true`) or reject a join request; `who` names it on the screen.
    Decide {
        identity: [u8; 16],
        who: String,
        approve: bool,
    },
    Kick {
        identity: [u8; 16],
        who: String,
    },
    Ban {
        identity: [u8; 16],
        who: String,
        reason: String,
    },
    Delete(i64),
    /// Lifts a ban; a banned identity is no longer a member, so it is named by its full hash.
    Unban([u8; 16]),
    /// Grant (`true`) or revoke rights of a member.
    Rights {
        identity: [u8; 16],
        who: String,
        rights: Rights,
        grant: bool,
    },
    /// A new public name for the group.
    Rename(String),
    /// One setting changed; `said` is how the status line shows it.
    Set {
        update: pb::SettingsUpdate,
        said: String,
    },
}

/// The outcome of an [`Action`] the server accepted.
enum Done {
    Posted(Posted),
    /// An admin action, said as the status line shows it.
    Admin(String),
}

/// The admin commands, the right each needs, and how it is typed.
const COMMANDS: [(&str, Rights, &str); 10] = [
    ("approve", Rights::APPROVE, "/approve N"),
    ("reject", Rights::APPROVE, "/reject N"),
    ("kick", Rights::KICK, "/kick NAME"),
    ("ban", Rights::BAN, "/ban NAME REASON"),
    ("delete", Rights::DELETE, "/delete ID"),
    ("unban", Rights::BAN, "/unban HASH"),
    ("grant", Rights::PERMISSIONS, "/grant NAME RIGHTS"),
    ("revoke", Rights::PERMISSIONS, "/revoke NAME RIGHTS"),
    ("rename", Rights::RENAME, "/rename NEW NAME"),
    ("set", Rights::SETTINGS, "/set SETTING VALUE"),
];

/// The status line while the selected group's first sync runs.
const SYNCING: &str = "syncing…";

/// What `/set` changes, as typed.
const SETTINGS: &str = "join-cost N, post-cost N, private|public, history-public on|off, listed on|off";

/// Reads one input line as an action: text is a post; `/command ARGS` an admin action, its
/// target named by a join request's number (or name), a member's name, or a hash prefix.
fn parse_line(line: &str, v: &View) -> Result<Action, String> {
    let Some(cmd) = line.strip_prefix('/') else { return Ok(Action::Post(line.to_owned())) };
    if cmd.starts_with('/') {
        return Ok(Action::Post(cmd.to_owned()));
    }
    let (name, rest) = cmd.split_once(' ').map_or((cmd, ""), |(n, r)| (n, r.trim()));
    let (target, tail) = rest.split_once(' ').map_or((rest, ""), |(t, r)| (t, r.trim()));
    match name {
        "approve" | "reject" => {
            let r = pick_request(&v.requests, target)?;
            Ok(Action::Decide { identity: r.0, who: r.1, approve: name == "approve" })
        }
        "kick" => pick_member(&v.members, target).map(|(identity, who)| Action::Kick { identity, who }),
        "ban" if tail.is_empty() => Err("a ban needs a reason: /ban NAME REASON".into()),
        "ban" => pick_member(&v.members, target).map(|(identity, who)| Action::Ban { identity, who, reason: tail.to_owned() }),
        "unban" if !tail.is_empty() => Err("/unban takes one identity hash and nothing after it".into()),
        "unban" => hex::decode(target)
            .ok()
            .and_then(|h| <[u8; 16]>::try_from(h).ok())
            .map(Action::Unban)
            .ok_or_else(|| format!("not an identity hash: {target:?} (/unban HASH, 32 hex digits)")),
        "delete" => target.trim_start_matches('#').parse().map(Action::Delete).map_err(|_| format!("not a message id: {target:?} (/delete ID)")),
        "grant" | "revoke" if tail.is_empty() => Err(format!("name the rights: /{name} NAME kick,ban (or all)")),
        "grant" | "revoke" => {
            let rights = Rights::parse_list(tail)?;
            pick_member(&v.members, target).map(|(identity, who)| Action::Rights { identity, who, rights, grant: name == "grant" })
        }
        "rename" if rest.is_empty() => Err("give the new name: /rename NEW NAME".into()),
        "rename" => Ok(Action::Rename(rest.to_owned())),
        "set" => parse_setting(target, tail).map(|(update, said)| Action::Set { update, said }),
        _ => Err(format!("unknown command /{name}; {}", usage(v.rights).unwrap_or_else(|| "you hold no admin right here".into()))),
    }
}

/// The admin commands the member's rights allow, as the input's title shows them; `None` for none.
fn usage(rights: Rights) -> Option<String> {
    let allowed: Vec<&str> = COMMANDS.iter().filter(|(_, r, _)| rights.contains(*r)).map(|(_, _, u)| *u).collect();
    (!allowed.is_empty()).then(|| allowed.join(", "))
}

/// A join request by its number on the screen (from 1), its display name, or a hash prefix.
fn pick_request(requests: &[pb::PendingJoin], target: &str) -> Result<([u8; 16], String), String> {
    let r = match target.parse::<usize>() {
        Ok(n) if (1..=requests.len()).contains(&n) => &requests[n - 1],
        _ => only_one(requests.iter().filter(|r| r.display_name.eq_ignore_ascii_case(target) || hex_prefix(&r.identity_hash, target)), target, "join request")?,
    };
    let identity = <[u8; 16]>::try_from(r.identity_hash.as_slice()).map_err(|_| "the server listed a malformed identity".to_owned())?;
    Ok((identity, if r.display_name.is_empty() { hex::encode(&r.identity_hash[..4]) } else { r.display_name.clone() }))
}

/// A member by display name (one only) or identity hash prefix.
fn pick_member(members: &[CachedMember], target: &str) -> Result<([u8; 16], String), String> {
    if target.is_empty() {
        return Err("name the member: by display name or hash prefix".into());
    }
    let named = |m: &&CachedMember| m.display_name.eq_ignore_ascii_case(target);
    let m = if members.iter().any(|m| named(&m)) {
        only_one(members.iter().filter(named), target, "member")?
    } else {
        only_one(members.iter().filter(|m| hex_prefix(&m.identity, target)), target, "member")?
    };
    let identity = <[u8; 16]>::try_from(m.identity.as_slice()).map_err(|_| "the cache holds a malformed identity".to_owned())?;
    Ok((identity, if m.display_name.is_empty() { target.to_owned() } else { m.display_name.clone() }))
}

/// The one item that `target` names; none, or more than one, is an error that says so (an admin
/// action never picks the first of several).
fn only_one<'a, T>(mut found: impl Iterator<Item = &'a T>, target: &str, what: &str) -> Result<&'a T, String> {
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(format!("no {what} {target:?}: give its name, number or hash prefix")),
        (Some(_), Some(_)) => Err(format!("{} {what}s match {target:?}: give a longer hash prefix", 2 + found.count())),
    }
}

/// One `/set` line as a settings update, and how the status line says it.
fn parse_setting(key: &str, value: &str) -> Result<(pb::SettingsUpdate, String), String> {
    let cost = || {
        value
            .parse::<u32>()
            .ok()
            .filter(|c| crate::domain::valid_stamp_cost((*c).into()))
            .ok_or_else(|| format!("{key} takes a stamp cost 0-254, not {value:?}"))
    };
    let on = || match value {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("{key} takes on or off, not {value:?}")),
    };
    let mut u = pb::SettingsUpdate::default();
    match key {
        "join-cost" => u.join_stamp_cost = Some(cost()?),
        "post-cost" => u.post_stamp_cost = Some(cost()?),
        "private" | "public" if value.is_empty() => u.visibility = Some(if key == "private" { pb::Visibility::Private } else { pb::Visibility::Public } as i32),
        "history-public" => u.history_public = Some(on()?),
        "listed" => u.listed = Some(on()?),
        _ => return Err(format!("/set takes one of: {SETTINGS}")),
    }
    Ok((u, if value.is_empty() { format!("set {key}") } else { format!("set {key} {value}") }))
}

/// Whether `prefix` (at least 4 hex digits) starts the hex of `hash`.
fn hex_prefix(hash: &[u8], prefix: &str) -> bool {
    prefix.len() >= 4 && hex::encode(hash).starts_with(&prefix.to_ascii_lowercase())
}

/// Does one action on the group `dest`.
async fn act(client: &Client, dest: [u8; 16], action: Action) -> Result<Done, ClientError> {
    let said = match action {
        Action::Post(text) => return client.post(dest, &text, Via::Auto).await.map(Done::Posted),
        Action::Decide { identity, who, approve } => {
            client.group(dest).await?.decide(identity, approve).await?;
            format!("{} {who}", if approve { "approved" } else { "rejected" })
        }
        Action::Kick { identity, who } => {
            client.group(dest).await?.kick(identity).await?;
            format!("kicked {who}")
        }
        Action::Ban { identity, who, reason } => {
            client.group(dest).await?.ban(identity, &reason).await?;
            format!("banned {who}: {reason}")
        }
        Action::Delete(id) => {
            client.group(dest).await?.delete(id).await?;
            format!("deleted #{id}")
        }
        Action::Unban(identity) => {
            client.group(dest).await?.unban(identity).await?;
            format!("unbanned {}", hex::encode(identity))
        }
        Action::Rights { identity, who, rights, grant } => {
            let now = client.group(dest).await?.change_rights(identity, rights, grant).await?;
            let now = if now == Rights::NONE { "no rights".to_owned() } else { now.names().join(",") };
            format!("{who} now holds {now}")
        }
        Action::Rename(name) => {
            client.group(dest).await?.rename(Some(name.clone()), None).await?;
            format!("renamed to {name}")
        }
        Action::Set { update, said } => {
            client.group(dest).await?.settings(update).await?;
            said
        }
    };
    Ok(Done::Admin(said))
}

enum SendState {
    Sending,
    Failed(String),
}

struct Pending {
    seq: u64,
    dest: [u8; 16],
    text: String,
    state: SendState,
}

#[derive(Default)]
struct View {
    groups: Vec<(CachedGroup, i64)>,
    selected: usize,
    history: Vec<CachedMessage>,
    members: Vec<CachedMember>,
    requests: Vec<pb::PendingJoin>,
    /// The member's rights in the selected group, as its last sync said.
    rights: Rights,
    input: String,
    pending: Vec<Pending>,
    status: String,
    scroll: u16,
}

impl View {
    fn dest(&self) -> Option<[u8; 16]> {
        self.groups.get(self.selected).map(|(g, _)| g.dest)
    }
}

/// Reloads what the screen shows from the cache (no network).
async fn reload(client: &Client, v: &mut View) -> Result<(), ClientError> {
    let cache = client.cache();
    let mut groups = Vec::new();
    for g in cache.groups().await?.into_iter().filter(|g| !g.membership.is_empty()) {
        let unread = cache.unread(&g.dest).await?;
        groups.push((g, unread));
    }
    let keep = v.dest();
    v.groups = groups;
    if let Some(d) = keep {
        v.selected = v.groups.iter().position(|(g, _)| g.dest == d).unwrap_or(0);
    }
    if let Some(d) = v.dest() {
        v.history = cache.history(&d, 500).await?;
        v.members = cache.members(&d).await?;
        if let Some(last) = v.history.last() {
            cache.mark_read(&d, last.id).await?;
            if let Some((_, unread)) = v.groups.get_mut(v.selected) {
                *unread = 0;
            }
        }
    }
    Ok(())
}

fn draw(f: &mut ratatui::Frame<'_>, v: &View) {
    let [main, input_area, status_area] = Layout::vertical([Constraint::Min(5), Constraint::Length(3), Constraint::Length(1)]).areas(f.area());
    let [left, middle, right] = Layout::horizontal([Constraint::Length(26), Constraint::Min(30), Constraint::Length(30)]).areas(main);

    let items: Vec<ListItem<'_>> = v
        .groups
        .iter()
        .map(|(g, unread)| {
            let mark = if g.membership == "requested" { " (requested)" } else { "" };
            let count = if *unread > 0 { format!(" [{unread}]") } else { String::new() };
            ListItem::new(format!("{}{count}{mark}", g.name))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(v.selected));
    let groups =
        List::new(items).block(Block::default().borders(Borders::ALL).title("Groups")).highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(groups, left, &mut state);

    let dest = v.dest();
    let mut lines: Vec<Line<'_>> = v
        .history
        .iter()
        .map(|m| {
            let text = if m.deleted { "(deleted)".to_owned() } else { String::from_utf8_lossy(&m.content).into_owned() };
            Line::from(format!("#{} {}: {text}", m.id, m.sender_name))
        })
        .collect();
    for p in v.pending.iter().filter(|p| Some(p.dest) == dest) {
        lines.push(Line::from(match &p.state {
            SendState::Sending => format!("… pending: {}", p.text),
            SendState::Failed(e) => format!("! not sent ({e}): {}", p.text),
        }));
    }
    let height = middle.height.saturating_sub(2) as usize;
    let top = lines.len().saturating_sub(height + v.scroll as usize) as u16;
    let title = v.groups.get(v.selected).map(|(g, _)| g.name.clone()).unwrap_or_else(|| "no group joined yet".into());
    let history = Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)).wrap(Wrap { trim: false }).scroll((top, 0));
    f.render_widget(history, middle);

    let mut side: Vec<ListItem<'_>> = v
        .members
        .iter()
        .map(|m| {
            let rights = if m.rights != 0 { format!(" ({})", Rights(m.rights).names().join(",")) } else { String::new() };
            ListItem::new(format!(
                "{}{rights}",
                if m.display_name.is_empty() { hex::encode(&m.identity[..4.min(m.identity.len())]) } else { m.display_name.clone() }
            ))
        })
        .collect();
    if !v.requests.is_empty() {
        side.push(ListItem::new(""));
        side.push(ListItem::new(format!("Join requests ({}):", v.requests.len())));
        side.extend(
            v.requests
                .iter()
                .enumerate()
                .map(|(i, r)| ListItem::new(format!("{}. {} {}", i + 1, r.display_name, hex::encode(&r.identity_hash[..4.min(r.identity_hash.len())])))),
        );
    }
    f.render_widget(List::new(side).block(Block::default().borders(Borders::ALL).title("Members")), right);

    f.render_widget(
        Paragraph::new(format!("> {}", v.input)).block(Block::default().borders(Borders::ALL).title(match usage(v.rights) {
            Some(admin) => format!("Message (Enter sends, Esc quits; {admin})"),
            None => "Message (Enter sends, Esc quits)".to_owned(),
        })),
        input_area,
    );
    f.render_widget(Paragraph::new(v.status.clone()), status_area);
}

/// Runs the UI until Esc or Ctrl-C. `first` selects a group at start.
pub async fn run(mut client: Client, first: Option<[u8; 16]>, tty: std::fs::File) -> Result<Output, CliError> {
    let incoming = client.incoming();
    let client = Arc::new(client);
    client.announce().await?;
    let (tx, mut rx) = mpsc::channel::<UiEvent>(256);

    // Keys: crossterm reads block, so on a thread of their own.
    let keys = tx.clone();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if let Event::Key(k) = ev
                && keys.blocking_send(UiEvent::Key(k)).is_err()
            {
                return;
            }
        }
    });
    if let Some(mut inc) = incoming {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(m) = inc.recv().await {
                if tx.send(UiEvent::Incoming(m)).await.is_err() {
                    return;
                }
            }
        });
    }
    // Sends and admin actions: one at a time, in order; each answered with its outcome.
    let (send_tx, mut send_rx) = mpsc::channel::<(u64, [u8; 16], Action)>(SEND_QUEUE);
    {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some((seq, dest, action)) = send_rx.recv().await {
                let result = act(&client, dest, action).await.map_err(|e| e.to_string());
                if tx.send(UiEvent::Sent { seq, dest, result }).await.is_err() {
                    return;
                }
            }
        });
    }
    // Syncs: history, roster, and for approvers the request queue; one at a time.
    let (sync_tx, mut sync_rx) = mpsc::channel::<([u8; 16], bool)>(4);
    {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some((dest, roster)) = sync_rx.recv().await {
                let (rights, requests, error) = match sync_one(&client, dest, roster).await {
                    Ok((rights, r)) => (rights, r, None),
                    Err(e) => (Rights::NONE, vec![], Some(e.to_string())),
                };
                if tx.send(UiEvent::Synced { dest, rights, requests, error }).await.is_err() {
                    return;
                }
            }
        });
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SYNC_EVERY);
            loop {
                tick.tick().await;
                if tx.send(UiEvent::Tick).await.is_err() {
                    return;
                }
            }
        });
    }

    enable_raw_mode().map_err(|e| CliError::Failure(format!("terminal: {e}")))?;
    let mut writer = tty;
    let _ = ratatui::crossterm::execute!(writer, EnterAlternateScreen);
    let result = ui_loop(&client, first, &mut rx, &send_tx, &sync_tx, writer).await;
    let _ = disable_raw_mode();
    result
}

/// One background sync. The roster (`roster`) is fetched when a group is opened, not on every
/// tick: it costs one request per 200 members, the only read here that grows with the group.
/// Returns the member's rights and, for approvers, the join requests.
async fn sync_one(client: &Client, dest: [u8; 16], roster: bool) -> Result<(Rights, Vec<pb::PendingJoin>), ClientError> {
    let s = client.group(dest).await?;
    let info = s.info().await?;
    if !info.is_member {
        return Ok((Rights::NONE, vec![]));
    }
    s.sync().await?;
    if roster {
        s.members().await?;
    }
    let rights = Rights(i64::from(info.rights));
    let requests = if rights.contains(Rights::APPROVE) { s.join_requests().await? } else { vec![] };
    Ok((rights, requests))
}

async fn ui_loop(
    client: &Client,
    first: Option<[u8; 16]>,
    rx: &mut mpsc::Receiver<UiEvent>,
    send_tx: &mpsc::Sender<(u64, [u8; 16], Action)>,
    sync_tx: &mpsc::Sender<([u8; 16], bool)>,
    writer: std::fs::File,
) -> Result<Output, CliError> {
    let mut terminal = Terminal::new(CrosstermBackend::new(writer)).map_err(|e| CliError::Failure(format!("terminal: {e}")))?;
    let mut v = View::default();
    reload(client, &mut v).await?;
    if let Some(d) = first {
        v.selected = v.groups.iter().position(|(g, _)| g.dest == d).unwrap_or(0);
    }
    if let Some(d) = v.dest() {
        let _ = sync_tx.try_send((d, true));
        v.status = SYNCING.into();
    }
    let mut seq = 0u64;
    let mut sent = 0u64;
    loop {
        reload(client, &mut v).await?;
        terminal.draw(|f| draw(f, &v)).map_err(|e| CliError::Failure(format!("terminal: {e}")))?;
        let Some(ev) = rx.recv().await else { break };
        match ev {
            UiEvent::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Esc => break,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break,
                KeyCode::Up | KeyCode::Down => {
                    let n = v.groups.len().max(1);
                    v.selected = if k.code == KeyCode::Up { (v.selected + n - 1) % n } else { (v.selected + 1) % n };
                    v.scroll = 0;
                    v.requests.clear();
                    v.rights = Rights::NONE;
                    if let Some(d) = v.groups.get(v.selected).map(|(g, _)| g.dest) {
                        let _ = sync_tx.try_send((d, true));
                        v.status = SYNCING.into();
                    }
                }
                KeyCode::PageUp => v.scroll = v.scroll.saturating_add(5),
                KeyCode::PageDown => v.scroll = v.scroll.saturating_sub(5),
                KeyCode::Backspace => {
                    v.input.pop();
                }
                KeyCode::Enter => {
                    let text = std::mem::take(&mut v.input);
                    let action = match v.dest() {
                        Some(dest) if !text.trim().is_empty() => parse_line(&text, &v).map(|a| (dest, a)),
                        _ => Err(String::new()),
                    };
                    match action {
                        Ok((dest, action)) => {
                            seq += 1;
                            let pending = match &action {
                                Action::Post(t) => Some(t.clone()),
                                _ => None,
                            };
                            if send_tx.try_send((seq, dest, action)).is_ok() {
                                match pending {
                                    Some(text) => v.pending.push(Pending { seq, dest, text, state: SendState::Sending }),
                                    None => v.status = format!("… {text}"),
                                }
                            } else {
                                v.status = "too many sends queued; wait for the link".into();
                                v.input = text;
                            }
                        }
                        Err(why) => {
                            if !why.is_empty() {
                                v.status = why;
                            }
                            v.input = text;
                        }
                    }
                }
                KeyCode::Char(ch) => v.input.push(ch),
                _ => {}
            },
            UiEvent::Key(_) => {}
            UiEvent::Sent { dest, result: Ok(Done::Admin(said)), .. } => {
                v.status = format!("✓ {said}");
                // The roster and the request queue changed: read them again.
                let _ = sync_tx.try_send((dest, true));
            }
            UiEvent::Sent { seq, result: Ok(Done::Posted(posted)), .. } => {
                v.pending.retain(|p| p.seq != seq);
                sent += 1;
                v.status = match posted {
                    Posted::Link { id, .. } => format!("✓ acknowledged #{id}"),
                    Posted::Lxmf { delivered: true, .. } => "✓ acknowledged (LXMF)".into(),
                    Posted::Lxmf { .. } => "sent as LXMF, not yet confirmed".into(),
                    Posted::Propagated { .. } => "deposited on the propagation node".into(),
                };
            }
            UiEvent::Sent { seq, result: Err(e), .. } => match v.pending.iter_mut().find(|p| p.seq == seq) {
                Some(p) => {
                    p.state = SendState::Failed(e.clone());
                    v.status = format!("not sent: {e}");
                }
                // An admin action: nothing pending to mark.
                None => v.status = format!("not done: {e}"),
            },
            UiEvent::Incoming(m) => v.status = format!("new in {}: {}", m.group_name, m.message.sender_name),
            UiEvent::Synced { dest, rights, requests, error } => {
                if Some(dest) == v.dest() {
                    v.requests = requests;
                    v.rights = rights;
                }
                match error {
                    Some(e) => v.status = format!("sync failed: {e}"),
                    // A quiet sync leaves the outcome of the user's last action on the status line.
                    None if v.status.is_empty() || v.status == SYNCING || v.status.starts_with("sync failed") => v.status = "synced".into(),
                    None => {}
                }
            }
            UiEvent::Tick => {
                if let Some(d) = v.dest() {
                    let _ = sync_tx.try_send((d, false));
                }
            }
        }
    }
    let _ = ratatui::crossterm::execute!(terminal.backend_mut(), LeaveAlternateScreen);
    Ok(Output::message(serde_json::json!({"sent": sent}), format!("{sent} sent")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        let member = |name: &str, b: u8| CachedMember { identity: vec![b; 16], display_name: name.into(), rights: 0, joined_at: 0 };
        View {
            members: vec![
                member("bob", 0xbb),
                member("dup", 0x01),
                member("dup", 0x02),
                CachedMember { identity: [[0xbb; 2], [0xcc; 2]].concat().repeat(4), ..member("eve", 0) },
            ],
            requests: vec![pb::PendingJoin { identity_hash: vec![0xcc; 16], display_name: "carol".into(), ..Default::default() }],
            rights: Rights::APPROVE.union(Rights::KICK),
            ..Default::default()
        }
    }

    #[test]
    fn a_line_is_a_post_or_an_admin_action_on_a_named_target() {
        let v = view();
        assert_eq!(parse_line("hello", &v), Ok(Action::Post("hello".into())));
        assert_eq!(parse_line("//me waves", &v), Ok(Action::Post("/me waves".into())));
        let carol = Action::Decide { identity: [0xcc; 16], who: "carol".into(), approve: true };
        assert_eq!(parse_line("/approve 1", &v), Ok(carol));
        assert_eq!(parse_line("/reject Carol", &v), Ok(Action::Decide { identity: [0xcc; 16], who: "carol".into(), approve: false }));
        assert_eq!(parse_line("/kick bob", &v), Ok(Action::Kick { identity: [0xbb; 16], who: "bob".into() }));
        assert_eq!(parse_line("/kick 0202", &v), Ok(Action::Kick { identity: [0x02; 16], who: "dup".into() }));
        assert_eq!(parse_line("/kick bbbbbb", &v), Ok(Action::Kick { identity: [0xbb; 16], who: "bob".into() }));
        assert_eq!(parse_line("/ban bob spam and worse", &v), Ok(Action::Ban { identity: [0xbb; 16], who: "bob".into(), reason: "spam and worse".into() }));
        assert_eq!(parse_line("/delete #12", &v), Ok(Action::Delete(12)));
        assert_eq!(parse_line(&format!("/unban {}", "CC".repeat(16)), &v), Ok(Action::Unban([0xcc; 16])));
        assert_eq!(
            parse_line("/grant bob kick,ban", &v),
            Ok(Action::Rights { identity: [0xbb; 16], who: "bob".into(), rights: Rights::KICK.union(Rights::BAN), grant: true })
        );
        assert_eq!(parse_line("/revoke bob all", &v), Ok(Action::Rights { identity: [0xbb; 16], who: "bob".into(), rights: Rights::ALL, grant: false }));
        assert_eq!(parse_line("/rename  The Back Room ", &v), Ok(Action::Rename("The Back Room".into())));
        let set = |u: pb::SettingsUpdate, said: &str| Ok(Action::Set { update: u, said: said.into() });
        assert_eq!(parse_line("/set join-cost 8", &v), set(pb::SettingsUpdate { join_stamp_cost: Some(8), ..Default::default() }, "set join-cost 8"));
        assert_eq!(
            parse_line("/set private", &v),
            set(pb::SettingsUpdate { visibility: Some(pb::Visibility::Private as i32), ..Default::default() }, "set private")
        );
        assert_eq!(parse_line("/set listed off", &v), set(pb::SettingsUpdate { listed: Some(false), ..Default::default() }, "set listed off"));
        for (line, says) in [
            ("/approve 2", "no join request"),
            ("/kick dup", "2 members match"),
            ("/kick 02", "no member"),
            ("/kick bbbb", "2 members match"),
            ("/ban bob", "needs a reason"),
            ("/delete x", "not a message id"),
            ("/unban cccc", "not an identity hash"),
            ("/unban bob for good", "nothing after it"),
            ("/grant bob", "name the rights"),
            ("/grant bob fly", "unknown right `fly`"),
            ("/rename", "give the new name"),
            ("/set join-cost 300", "0-254"),
            ("/set listed maybe", "on or off"),
            ("/set private now", "/set takes one of"),
            ("/set colour red", "/set takes one of"),
            ("/frobnicate", "/approve N, /reject N, /kick NAME"),
        ] {
            let err = parse_line(line, &v).err().unwrap_or_default();
            assert!(err.contains(says), "{line}: {err}");
        }
        assert_eq!(usage(Rights::NONE), None);
    }
}
