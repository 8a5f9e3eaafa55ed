//! `meshgroup client ui`: the terminal UI over [`crate::client`]. Groups with unread counts on the
//! left, the selected group's history (from the cache) in the middle, its members and, for
//! approvers, the join-request queue on the right, an input line at the bottom.
//!
//! Made for slow links: a send is queued (one at a time, in order) and shown pending until the
//! server acknowledges it; syncs run in the background; the screen is drawn from the cache only,
//! so it never waits for the network. Keys: Up/Down select a group, PageUp/PageDown scroll,
//! Enter sends, Esc or Ctrl-C quits.

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
    Sent { seq: u64, result: Result<Posted, String> },
    Synced { dest: [u8; 16], requests: Vec<pb::PendingJoin>, error: Option<String> },
    Tick,
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
        side.extend(v.requests.iter().map(|r| ListItem::new(format!("? {} {}", r.display_name, hex::encode(&r.identity_hash)))));
    }
    f.render_widget(List::new(side).block(Block::default().borders(Borders::ALL).title("Members")), right);

    f.render_widget(
        Paragraph::new(format!("> {}", v.input)).block(Block::default().borders(Borders::ALL).title("Message (Enter sends, Esc quits)")),
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
    // Sends: one at a time, in order; each answered with its outcome.
    let (send_tx, mut send_rx) = mpsc::channel::<(u64, [u8; 16], String)>(SEND_QUEUE);
    {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some((seq, dest, text)) = send_rx.recv().await {
                let result = client.post(dest, &text, Via::Auto).await.map_err(|e| e.to_string());
                if tx.send(UiEvent::Sent { seq, result }).await.is_err() {
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
                let (requests, error) = match sync_one(&client, dest, roster).await {
                    Ok(r) => (r, None),
                    Err(e) => (vec![], Some(e.to_string())),
                };
                if tx.send(UiEvent::Synced { dest, requests, error }).await.is_err() {
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
async fn sync_one(client: &Client, dest: [u8; 16], roster: bool) -> Result<Vec<pb::PendingJoin>, ClientError> {
    let s = client.group(dest).await?;
    let info = s.info().await?;
    if !info.is_member {
        return Ok(vec![]);
    }
    s.sync().await?;
    if roster {
        s.members().await?;
    }
    if i64::from(info.rights) & Rights::APPROVE.0 != 0 { s.join_requests().await } else { Ok(vec![]) }
}

async fn ui_loop(
    client: &Client,
    first: Option<[u8; 16]>,
    rx: &mut mpsc::Receiver<UiEvent>,
    send_tx: &mpsc::Sender<(u64, [u8; 16], String)>,
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
        v.status = "syncing…".into();
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
                    if let Some(d) = v.groups.get(v.selected).map(|(g, _)| g.dest) {
                        let _ = sync_tx.try_send((d, true));
                    }
                }
                KeyCode::PageUp => v.scroll = v.scroll.saturating_add(5),
                KeyCode::PageDown => v.scroll = v.scroll.saturating_sub(5),
                KeyCode::Backspace => {
                    v.input.pop();
                }
                KeyCode::Enter => {
                    let text = std::mem::take(&mut v.input);
                    match v.dest() {
                        Some(dest) if !text.trim().is_empty() => {
                            seq += 1;
                            if send_tx.try_send((seq, dest, text.clone())).is_ok() {
                                v.pending.push(Pending { seq, dest, text, state: SendState::Sending });
                            } else {
                                v.status = "too many sends queued; wait for the link".into();
                                v.input = text;
                            }
                        }
                        _ => v.input = text,
                    }
                }
                KeyCode::Char(ch) => v.input.push(ch),
                _ => {}
            },
            UiEvent::Key(_) => {}
            UiEvent::Sent { seq, result } => match result {
                Ok(posted) => {
                    v.pending.retain(|p| p.seq != seq);
                    sent += 1;
                    v.status = match posted {
                        Posted::Link { id, .. } => format!("✓ acknowledged #{id}"),
                        Posted::Lxmf { delivered: true, .. } => "✓ acknowledged (LXMF)".into(),
                        Posted::Lxmf { .. } => "sent as LXMF, not yet confirmed".into(),
                        Posted::Propagated { .. } => "deposited on the propagation node".into(),
                    };
                }
                Err(e) => {
                    if let Some(p) = v.pending.iter_mut().find(|p| p.seq == seq) {
                        p.state = SendState::Failed(e.clone());
                    }
                    v.status = format!("not sent: {e}");
                }
            },
            UiEvent::Incoming(m) => v.status = format!("new in {}: {}", m.group_name, m.message.sender_name),
            UiEvent::Synced { dest, requests, error } => {
                if Some(dest) == v.dest() {
                    v.requests = requests;
                }
                v.status = error.map(|e| format!("sync failed: {e}")).unwrap_or_else(|| "synced".into());
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
