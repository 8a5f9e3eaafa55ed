//! Text commands for stock LXMF clients: a message starting with `/` is an instruction, not a post.
//!
//! Each command becomes the same [`Op`] the link API uses, so the same rules apply.

use crate::domain::{NotifyMode, Rights};
use crate::group::{JoinOutcome, Op, Reply};
use crate::store::{HistoryQuery, Member, Order};
use crate::wire::identity::parse_hash;

/// The most history lines one `/history` returns (each reply must fit small packets).
pub const MAX_HISTORY: u64 = 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Join,
    Leave,
    Members,
    History(u64),
    Notify(NotifyMode),
    /// `/notify digest on|off`: the periodic membership digest.
    Digest(bool),
    /// `/notify textonly on|off`: posts without their attachments (for members on LoRa).
    TextOnly(bool),
    /// Pending join requests (approvers).
    Requests,
    /// `/name NEW NAME`: the member's display name in this group.
    Name(String),
    Kick(String),
    Ban(String, String),
    Unban(String),
    Approve(String),
    /// Declines a pending join request (approvers); the requester is told.
    Reject(String),
    Delete(i64),
}

pub const HELP: &str = "Commands: /join, /leave, /members, /history [N], /name NEW NAME, /notify full|short|off, /notify digest on|off, /notify textonly on|off. \
Admins: /requests, /approve ID, /reject ID, /kick ID, /ban ID reason, /unban ID, /delete MSG_ID. ID = identity hash.";

fn identity(arg: Option<&str>) -> Result<String, String> {
    arg.and_then(parse_hash).map(hex::encode).ok_or_else(|| "give a 32-character identity hash".to_owned())
}

/// `None` when the text is not a command; `Some(Err(..))` explains a malformed one.
pub fn parse(text: &str) -> Option<Result<Command, String>> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or("").to_ascii_lowercase();
    Some(match name.as_str() {
        "help" | "" => Ok(Command::Help),
        "join" => Ok(Command::Join),
        "leave" => Ok(Command::Leave),
        "members" => Ok(Command::Members),
        "history" => match words.next().map(str::parse::<u64>) {
            None => Ok(Command::History(5)),
            Some(Ok(n)) if n > 0 => Ok(Command::History(n.min(MAX_HISTORY))),
            Some(_) => Err("usage: /history [N]".into()),
        },
        "notify" => {
            const USAGE: &str = "usage: /notify full|short|off, /notify digest on|off, or /notify textonly on|off";
            let first = words.next().map(str::to_ascii_lowercase);
            let second = words.next().map(str::to_ascii_lowercase);
            match (first.as_deref(), second.as_deref()) {
                (Some("digest"), Some("on")) => Ok(Command::Digest(true)),
                (Some("digest"), Some("off")) => Ok(Command::Digest(false)),
                (Some("textonly"), Some("on")) => Ok(Command::TextOnly(true)),
                (Some("textonly"), Some("off")) => Ok(Command::TextOnly(false)),
                (Some(m), None) => NotifyMode::parse(m).map(Command::Notify).ok_or_else(|| USAGE.to_owned()),
                _ => Err(USAGE.into()),
            }
        }
        "requests" => Ok(Command::Requests),
        "name" => {
            let name = crate::group::clean_name(&words.collect::<Vec<_>>().join(" "), 64);
            if name.is_empty() { Err("usage: /name NEW NAME".into()) } else { Ok(Command::Name(name)) }
        }
        "kick" => identity(words.next()).map(Command::Kick),
        "ban" => {
            let who = identity(words.next());
            let reason = words.collect::<Vec<_>>().join(" ");
            match who {
                Ok(_) if reason.is_empty() => Err("usage: /ban ID reason".into()),
                Ok(w) => Ok(Command::Ban(w, reason)),
                Err(e) => Err(e),
            }
        }
        "unban" => identity(words.next()).map(Command::Unban),
        "approve" => identity(words.next()).map(Command::Approve),
        "reject" => identity(words.next()).map(Command::Reject),
        "delete" => match words.next().map(str::parse::<i64>) {
            Some(Ok(id)) => Ok(Command::Delete(id)),
            _ => Err("usage: /delete MSG_ID".into()),
        },
        other => Err(format!("unknown command /{other}; send /help")),
    })
}

impl Command {
    /// The operation behind the command; `Help` has none.
    pub fn op(&self, display_name: &str, stamp_verified: bool) -> Option<Op> {
        Some(match self {
            Command::Help => return None,
            Command::Join => Op::Join { display_name: display_name.to_owned(), note: "via LXMF".into(), stamp_verified },
            Command::Leave => Op::Leave,
            Command::Members => Op::Members { offset: 0, limit: 30 },
            Command::History(n) => Op::History(HistoryQuery { limit: *n, order: Order::OldestFirst, ..Default::default() }),
            Command::Notify(m) => Op::SetNotifications { mode: Some(*m), digest: None, text_only: None },
            Command::Digest(on) => Op::SetNotifications { mode: None, digest: Some(*on), text_only: None },
            Command::TextOnly(on) => Op::SetNotifications { mode: None, digest: None, text_only: Some(*on) },
            Command::Requests => Op::JoinRequests,
            Command::Name(n) => Op::SetMemberName { name: n.clone() },
            Command::Kick(id) => Op::Kick { identity: id.clone() },
            Command::Ban(id, reason) => Op::Ban { identity: id.clone(), reason: reason.clone() },
            Command::Unban(id) => Op::Unban { identity: id.clone() },
            Command::Approve(id) => Op::Approve { identity: id.clone() },
            Command::Reject(id) => Op::Reject { identity: id.clone() },
            Command::Delete(id) => Op::DeleteMessage { id: *id },
        })
    }
}

fn member_line(m: &Member) -> String {
    let admin = if m.permissions != 0 { format!(" [{}]", Rights(m.permissions).names().join(",")) } else { String::new() };
    format!("{} <{}>{admin}", if m.display_name.is_empty() { "?" } else { &m.display_name }, m.identity_hash)
}

/// The reply lines for a successful command. `subject` is the display name of the member a
/// kick or ban is about, or of the requester an approval or rejection decides, when known.
pub fn render(cmd: &Command, reply: &Reply, subject: Option<&str>) -> Vec<String> {
    let named = |id: &str| subject.map_or_else(|| id.to_owned(), |n| format!("{n} <{id}>"));
    match (cmd, reply) {
        (Command::Join, Reply::Joined(JoinOutcome::Joined)) => {
            // Listed under the name the client announced (or a hash prefix): say how to change it.
            vec!["Welcome! You are a member now. Send /name NEW NAME to change the name you are listed under; /help lists the commands.".into()]
        }
        (Command::Join, Reply::Joined(JoinOutcome::AlreadyMember)) => vec!["You are already a member.".into()],
        (Command::Join, Reply::Joined(JoinOutcome::Requested)) => vec!["Join request sent; an admin will decide.".into()],
        (Command::Leave, _) => vec!["You left the group.".into()],
        (Command::Members, Reply::Members { members, total }) => {
            let mut lines = vec![format!("{total} members:")];
            lines.extend(members.iter().map(member_line));
            lines
        }
        (Command::History(_), Reply::History { messages, .. }) if messages.is_empty() => vec!["No messages yet.".into()],
        (Command::History(_), Reply::History { messages, .. }) => messages
            .iter()
            .map(|(m, name)| {
                if m.deleted_at.is_some() {
                    format!("#{} (deleted)", m.id)
                } else {
                    let who = if name.is_empty() { m.sender_identity_hash.get(..8).unwrap_or("?") } else { name };
                    format!("#{} {who}: {}", m.id, String::from_utf8_lossy(&m.content))
                }
            })
            .collect(),
        (Command::Notify(m), _) => vec![format!("Notifications: {}.", m.as_str())],
        (Command::Name(n), _) => vec![format!("You are now called {n} in this group.")],
        (Command::Digest(on), _) => vec![format!("Membership digest: {}.", if *on { "on" } else { "off" })],
        (Command::TextOnly(true), _) => {
            vec!["Text only: posts come without their attachments, and a line says what was left out. Fetch one with the link API (/api/v1/messages/attachment).".into()]
        }
        (Command::TextOnly(false), _) => vec!["Text only: off; posts come with their attachments.".into()],
        (Command::Requests, Reply::JoinRequests(rs)) if rs.is_empty() => vec!["No pending join requests.".into()],
        (Command::Requests, Reply::JoinRequests(rs)) => {
            let mut lines = vec![format!("{} pending (send /approve ID or /reject ID):", rs.len())];
            lines.extend(rs.iter().map(|r| format!("{} <{}> {}", r.display_name, r.identity_hash, r.note)));
            lines
        }
        (Command::Kick(id), _) => vec![format!("Removed {}.", named(id))],
        (Command::Ban(id, _), _) => vec![format!("Banned {}.", named(id))],
        (Command::Unban(id), _) => vec![format!("Unbanned {id}.")],
        (Command::Approve(id), _) => vec![format!("Approved {}.", named(id))],
        (Command::Reject(id), _) => vec![format!("Declined the request of {}.", named(id))],
        (Command::Delete(id), _) => vec![format!("Deleted message #{id}.")],
        _ => vec!["Done.".into()],
    }
}

/// Which lines a reply keeps when they do not all fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The first lines (a member list keeps its header).
    First,
    /// The last lines (history keeps the newest messages).
    Last,
}

/// Room for the "(i/n) " that numbers the parts of a reply.
const PART_PREFIX: usize = 8;

/// Packs lines into at most `parts` message bodies of at most `max` bytes each, so a reply fits
/// single packets on slow links. When the lines do not all fit, the ones `keep` names stay and a
/// line says how many were left out. With more than one part, each starts with a line `(i/n)`: separate
/// packets can arrive out of order, and a reader can put them back.
pub fn chunk(lines: &[String], max: usize, parts: usize, keep: Keep) -> Vec<String> {
    let room = max.saturating_sub(PART_PREFIX).max(16);
    let clean: Vec<String> = lines.iter().map(|l| truncate_bytes(&l.replace('\r', ""), room)).collect();
    let n = clean.len();
    for kept in (0..=n).rev() {
        let cut = n - kept;
        let mut all: Vec<String> = match keep {
            Keep::First => clean[..kept].to_vec(),
            Keep::Last => clean[cut..].to_vec(),
        };
        if cut > 0 {
            match keep {
                Keep::First => all.push(format!("… {cut} more not shown")),
                Keep::Last => all.insert(0, format!("… {cut} older not shown")),
            }
        }
        let packed = pack_lines(&all, room);
        if packed.len() <= parts {
            let total = packed.len();
            return if total <= 1 { packed } else { packed.into_iter().enumerate().map(|(i, p)| format!("({}/{total})\n{p}", i + 1)).collect() };
        }
    }
    Vec::new()
}

/// Greedy packing of lines (each at most `max` bytes) into bodies of at most `max` bytes.
fn pack_lines(lines: &[String], max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in lines {
        if !cur.is_empty() && cur.len() + 1 + line.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(line);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("/join"), Some(Ok(Command::Join)));
        assert_eq!(parse(" /history 5 "), Some(Ok(Command::History(5))));
        assert_eq!(parse("/history 500"), Some(Ok(Command::History(MAX_HISTORY))));
        assert_eq!(parse("/notify off"), Some(Ok(Command::Notify(NotifyMode::None))));
        assert_eq!(parse("/notify textonly on"), Some(Ok(Command::TextOnly(true))));
        assert!(matches!(parse("/notify textonly maybe"), Some(Err(_))));
        let id = "3e3c2cef10df1fa5ed6139690e3a9620";
        assert_eq!(parse(&format!("/ban {id} spam and abuse")), Some(Ok(Command::Ban(id.into(), "spam and abuse".into()))));
        assert!(matches!(parse(&format!("/ban {id}")), Some(Err(_))));
        assert!(matches!(parse("/kick bob"), Some(Err(_))));
        assert!(matches!(parse("/frobnicate"), Some(Err(_))));
        assert_eq!(parse("/delete 12"), Some(Ok(Command::Delete(12))));
    }

    #[test]
    fn chunks_fit() {
        let lines: Vec<String> = (0..30).map(|i| format!("line {i} {}", "é".repeat(40))).collect();
        let parts = chunk(&lines, 200, 4, Keep::First);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= 200));
        assert!(parts[0].starts_with("(1/4)\nline 0 ") && parts[3].ends_with("more not shown"), "{parts:?}");
    }

    /// Issue 16: a long history kept the oldest chunks and dropped the newest messages silently.
    #[test]
    fn a_cut_history_keeps_the_newest_in_order_and_says_so() {
        let ids: Vec<i64> = (1..=8).chain(17..=24).collect();
        let lines: Vec<String> = ids.iter().map(|id| format!("#{id} alice: {}", "x".repeat(120))).collect();
        let parts = chunk(&lines[lines.len() - 10..], 240, 5, Keep::Last);
        assert!(parts.len() <= 5);
        let text = parts.join("\n");
        assert!(text.contains("#24 alice") && text.contains("#23 alice") && text.contains("#22 alice"), "{parts:?}");
        assert!(parts[0].starts_with("(1/") && parts[0].contains("older not shown"), "{parts:?}");
        let order: Vec<usize> = ids.iter().filter_map(|id| text.find(&format!("#{id} alice"))).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {parts:?}");
        assert!(parts.iter().all(|p| p.len() <= 240));
        // One short reply is one unnumbered part.
        assert_eq!(chunk(&["Done.".to_owned()], 240, 5, Keep::Last), vec!["Done.".to_owned()]);
    }
}
