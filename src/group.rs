//! One group's state and every operation on it, with the rules applied.
//!
//! [`GroupCore`] is what a group actor owns; the CLI builds one too when no server is running,
//! so every entry point runs the same code with the same [`crate::domain::authorize`].

use std::collections::{HashMap, HashSet};

use crate::domain::{Action, DeliveryClass, Denied, NotifyMode, Policy, Rights, Role, Visibility, authorize, may_change_rights};
use crate::store::{Ban, Event, Group, GroupPatch, HistoryQuery, InsertOutcome, JoinRequest, Member, Message, NewMessage, ReactionOutcome, Store, StoreError};

/// Every attachment kind.
const ALL_KINDS: u32 = crate::wire::lxmf::KIND_IMAGE | crate::wire::lxmf::KIND_FILE | crate::wire::lxmf::KIND_AUDIO;

/// Attachment kind bits in words: "images and audio".
pub fn kind_names(kinds: u32) -> String {
    use crate::wire::lxmf::{KIND_AUDIO, KIND_FILE, KIND_IMAGE};
    let names: Vec<&str> =
        [(KIND_IMAGE, "images"), (KIND_FILE, "files"), (KIND_AUDIO, "audio")].iter().filter(|(k, _)| kinds & k != 0).map(|(_, n)| *n).collect();
    names.join(" and ")
}

/// A size as people read it: `812 B`, `45.3 KB`.
pub fn human_bytes(n: u64) -> String {
    if n < 1024 { format!("{n} B") } else { format!("{:.1} KB", n as f64 / 1024.0) }
}

/// Reactions one member may hold on one message: enough for a few emoji, not a flood (each one
/// is a copy to every full-mode member).
pub const MAX_REACTIONS_PER_MEMBER: u64 = 3;

/// Who is calling: the operator, an identified peer (identity hash, hex), or an unidentified link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Owner,
    Identity(String),
    Anonymous,
}

impl Caller {
    /// How the caller is recorded in `banned_by`, `deleted_by` and events.
    pub fn label(&self) -> &str {
        match self {
            Caller::Owner => "owner",
            Caller::Identity(h) => h,
            Caller::Anonymous => "anonymous",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("identify on the link first")]
    Unauthenticated,
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("this requires a stamp of cost {cost}")]
    StampRequired { cost: u32 },
    #[error("too many requests, try again later")]
    RateLimited,
    /// Shared, because one failed commit fails every post of a batch with the same cause.
    #[error("storage failure")]
    Store(#[source] std::sync::Arc<StoreError>),
}

impl From<StoreError> for GroupError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => GroupError::NotFound(what.into()),
            StoreError::Banned => GroupError::Forbidden("identity is banned from this group".into()),
            StoreError::Conflict { what } => GroupError::InvalidArgument(format!("{what} already exists")),
            other => GroupError::Store(std::sync::Arc::new(other)),
        }
    }
}

fn denied(d: Denied, action: Action) -> GroupError {
    match d {
        Denied::Unauthenticated => GroupError::Unauthenticated,
        Denied::Forbidden => GroupError::Forbidden(format!("{action:?} is not permitted for this caller")),
    }
}

/// The result of a join: member at once, or a request for an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    AlreadyMember,
    Requested,
}

/// A settings change; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub visibility: Option<Visibility>,
    pub join_stamp_cost: Option<u32>,
    pub post_stamp_cost: Option<u32>,
    pub history_public: Option<bool>,
    pub listed: Option<bool>,
    /// Most bytes of attachments a post may carry, at most [`crate::wire::lxmf::MAX_PACKED_LEN`].
    pub attachment_max_bytes: Option<u32>,
    /// Attachment kinds allowed (bits of `KIND_IMAGE`, `KIND_FILE`, `KIND_AUDIO`).
    pub attachment_kinds: Option<u32>,
}

impl Settings {
    /// Whether the change leaves every setting as it is.
    pub fn is_empty(&self) -> bool {
        self.visibility.is_none()
            && self.join_stamp_cost.is_none()
            && self.post_stamp_cost.is_none()
            && self.history_public.is_none()
            && self.listed.is_none()
            && self.attachment_max_bytes.is_none()
            && self.attachment_kinds.is_none()
    }
}

/// A group with its members and bans in memory, written through to the store.
#[derive(Debug)]
pub struct GroupCore {
    store: Store,
    group: Group,
    members: HashMap<String, Member>,
    bans: HashSet<String>,
    fanout: Vec<FanoutJob>,
    /// Set once the group is deleted: the actor lingers until the supervisor stops it.
    deleted: bool,
    /// The last event the digests have covered; later ones go into the next digest.
    digest_cursor: i64,
    /// Whether an event worth a digest happened since the last one (true after a load, which
    /// cannot know what happened before a restart without asking the store once).
    digest_due: bool,
}

/// Deliveries owed after an operation: a new post, or a notice of a group event.
#[derive(Clone, Debug, PartialEq)]
pub struct FanoutJob {
    pub group_id: i64,
    pub message_id: Option<i64>,
    pub event_id: Option<i64>,
    /// A reaction to `message_id`: its rows carry the reaction, not the message.
    pub reaction_id: Option<i64>,
    pub class: DeliveryClass,
    /// Who receives it and how; members who chose `none` are left out of posts.
    pub recipients: Vec<(String, NotifyMode)>,
}

/// Who is pushed a notice of an event. Every other event stays in the group's history only.
///
/// The rule: the work one event causes does not grow with the group. A membership change is
/// never pushed per event (N joins would cost N²/2 messages); it goes into the periodic digest,
/// which members opt in to and which costs one message per subscriber per interval, however
/// many events it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The one identity the event is about: a kicked or banned member, a decided join request.
    Subject,
    /// Members who opted in to the digest.
    DigestSubscribers,
    /// Holders of the approve right (and the founder): pending join requests.
    Approvers,
}

/// Event kinds of the digests themselves (stored like any event, so a restart can resume them).
pub const DIGEST_KIND: &str = "digest";
pub const REQUESTS_KIND: &str = "requests_pending";

/// Who hears of an event of this kind, and in which delivery class; `None`: nobody is pushed it.
pub fn notice_audience(kind: &str, detail: &str) -> Option<(Audience, DeliveryClass)> {
    match kind {
        "kicked" | "banned" | "join_rejected" => Some((Audience::Subject, DeliveryClass::Direct)),
        "joined" if detail == "approved" => Some((Audience::Subject, DeliveryClass::Direct)),
        DIGEST_KIND => Some((Audience::DigestSubscribers, DeliveryClass::Digest)),
        REQUESTS_KIND => Some((Audience::Approvers, DeliveryClass::Direct)),
        _ => None,
    }
}

/// The recipients of a notice, from the group's members; the same code serves the live group and
/// start-up recovery.
pub fn audience_members<'a>(audience: Audience, subject: &str, founder: Option<&str>, members: impl Iterator<Item = &'a Member>) -> Vec<(String, NotifyMode)> {
    match audience {
        Audience::Subject if subject.is_empty() => Vec::new(),
        Audience::Subject => vec![(subject.to_owned(), NotifyMode::Full)],
        Audience::DigestSubscribers => members.filter(|m| m.digest).map(|m| (m.identity_hash.clone(), NotifyMode::Full)).collect(),
        Audience::Approvers => members
            .filter(|m| Rights(m.permissions).contains(Rights::APPROVE) || founder == Some(m.identity_hash.as_str()))
            .map(|m| (m.identity_hash.clone(), NotifyMode::Full))
            .collect(),
    }
}

/// Event kinds a digest counts.
const DIGEST_COUNTED: &[&str] = &["joined", "left", "kicked", "banned", "renamed", "join_requested"];

/// The digest line for the counted events since `since` (Unix ms), or `None` when nothing to say.
pub fn digest_text(counts: &HashMap<String, u64>, name: &str, since: i64) -> Option<String> {
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    let mut parts = Vec::new();
    if n("joined") > 0 {
        parts.push(format!("{} joined", n("joined")));
    }
    if n("left") > 0 {
        parts.push(format!("{} left", n("left")));
    }
    if n("kicked") + n("banned") > 0 {
        parts.push(format!("{} removed", n("kicked") + n("banned")));
    }
    if n("renamed") > 0 {
        parts.push(format!("the group is now called {name}"));
    }
    if parts.is_empty() {
        return None;
    }
    let at = chrono::DateTime::from_timestamp_millis(since).map(|t| t.format("%H:%M UTC").to_string()).unwrap_or_default();
    Some(format!("{} since {at}", parts.join(", ")))
}

impl GroupCore {
    /// Loads a group's members and bans.
    pub async fn load(store: Store, group: Group) -> Result<Self, GroupError> {
        let members = store.all_members(group.id).await?.into_iter().map(|m| (m.identity_hash.clone(), m)).collect();
        let bans = store.bans(group.id).await?.into_iter().map(|b| b.identity_hash).collect();
        let digest_cursor = store.digest_cursor(group.id, &[DIGEST_KIND]).await?;
        Ok(GroupCore { store, group, members, bans, fanout: Vec::new(), deleted: false, digest_cursor, digest_due: true })
    }

    /// Re-reads everything from the store (after a change made elsewhere, e.g. by the CLI).
    pub async fn reload(&mut self) -> Result<(), GroupError> {
        let group = self.store.group_by_id(self.group.id).await?;
        let pending = std::mem::take(&mut self.fanout);
        let cursor = self.digest_cursor;
        *self = GroupCore::load(self.store.clone(), group).await?;
        self.fanout = pending;
        // The digest resumes where it was, not after the events that made this reload.
        self.digest_cursor = cursor;
        Ok(())
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// Whether the group was deleted (its actor lingers until the supervisor stops it).
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn visibility(&self) -> Visibility {
        Visibility::parse(&self.group.visibility).unwrap_or(Visibility::Private)
    }

    pub fn policy(&self) -> Policy {
        Policy { visibility: self.visibility(), history_public: self.group.history_public }
    }

    pub fn is_member(&self, identity_hash: &str) -> bool {
        self.members.contains_key(identity_hash)
    }

    pub fn member(&self, identity_hash: &str) -> Option<&Member> {
        self.members.get(identity_hash)
    }

    /// Members (identity hash and mode) for the fan-out, poster excluded.
    pub fn recipients(&self, except: &str) -> Vec<(String, NotifyMode)> {
        self.members
            .values()
            .filter(|m| m.identity_hash != except)
            .map(|m| (m.identity_hash.clone(), NotifyMode::parse(&m.notify_mode).unwrap_or(NotifyMode::Full)))
            .collect()
    }

    pub fn role(&self, caller: &Caller) -> Role {
        match caller {
            Caller::Owner => Role::Owner,
            Caller::Anonymous => Role::Anonymous,
            Caller::Identity(h) if self.bans.contains(h) => Role::Banned,
            Caller::Identity(h) => match self.members.get(h) {
                Some(_) if self.group.founder_identity_hash.as_deref() == Some(h.as_str()) => Role::Founder,
                Some(m) => Role::Member(Rights(m.permissions)),
                None => Role::NonMember,
            },
        }
    }

    /// Applies the rules; on success returns the caller's role.
    pub fn check(&self, caller: &Caller, action: Action) -> Result<Role, GroupError> {
        let role = self.role(caller);
        authorize(role, action, self.policy()).map_err(|d| denied(d, action))?;
        Ok(role)
    }

    /// Records an event. Only the [`notice_audience`] of its kind is pushed anything, at once;
    /// membership changes wait for the digest.
    async fn event(&mut self, kind: &'static str, caller: &Caller, subject: &str, detail: &str) -> Result<(), GroupError> {
        let notice = notice_audience(kind, detail);
        let ev = self.store.insert_event(self.group.id, kind, caller.label(), subject, detail, notice.is_some()).await?;
        crate::metrics::group_action(kind, self.group.id);
        if DIGEST_COUNTED.contains(&kind) {
            self.digest_due = true;
        }
        if let Some((audience, class)) = notice {
            let founder = self.group.founder_identity_hash.as_deref();
            let recipients = audience_members(audience, subject, founder, self.members.values());
            self.fanout.push(FanoutJob { group_id: self.group.id, message_id: None, event_id: Some(ev.id), reaction_id: None, class, recipients });
        }
        Ok(())
    }

    /// Sends the digests owed since the last one: to subscribers, one line on the membership
    /// changes; to approvers, one line on new join requests. Called once per digest interval, so
    /// a group sends at most one digest per subscriber per interval, whatever happened.
    pub async fn digest(&mut self) -> Result<(), GroupError> {
        if !self.digest_due || self.deleted {
            return Ok(());
        }
        let (counts, last) = self.store.event_counts_since(self.group.id, self.digest_cursor).await?;
        if counts.is_empty() {
            self.digest_due = false;
            return Ok(());
        }
        let since = self.store.event_time(self.digest_cursor).await?.unwrap_or(self.group.created_at);
        let name = self.visible_name(&Caller::Owner);
        if let Some(text) = digest_text(&counts, &name, since) {
            tracing::info!(group = self.group.id, %text, "membership digest");
            crate::metrics::digest_sent("members");
            self.event(DIGEST_KIND, &Caller::Owner, &last.to_string(), &text).await?;
        }
        let requests = counts.get("join_requested").copied().unwrap_or(0);
        if requests > 0 {
            let pending = self.store.join_requests(self.group.id, "pending").await?.len();
            let text = format!("{requests} new join request{} ({pending} pending): send /requests", if requests == 1 { "" } else { "s" });
            crate::metrics::digest_sent("join_requests");
            self.event(REQUESTS_KIND, &Caller::Owner, "", &text).await?;
        }
        // Only now: a store failure above leaves the digest due, for the next interval.
        self.digest_due = false;
        self.digest_cursor = last;
        Ok(())
    }

    /// The fan-out jobs produced since the last call.
    pub fn take_fanout(&mut self) -> Vec<FanoutJob> {
        std::mem::take(&mut self.fanout)
    }

    fn identity_of(caller: &Caller) -> Result<&str, GroupError> {
        match caller {
            Caller::Identity(h) => Ok(h),
            _ => Err(GroupError::Unauthenticated),
        }
    }

    /// Joins a public group at once, or files a request for a private one.
    pub async fn join(&mut self, caller: &Caller, display_name: &str, note: &str) -> Result<JoinOutcome, GroupError> {
        self.check(caller, Action::Join)?;
        let who = Self::identity_of(caller)?.to_owned();
        if self.members.contains_key(&who) {
            return Ok(JoinOutcome::AlreadyMember);
        }
        let name = clean_name(display_name, 64);
        if self.visibility() == Visibility::Private {
            self.store.file_join_request(self.group.id, &who, &name, &clean_name(note, 256)).await?;
            self.event("join_requested", caller, &who, "").await?;
            return Ok(JoinOutcome::Requested);
        }
        let m = self.store.add_member(self.group.id, &who, &name, 0, NotifyMode::Full.as_str()).await?;
        self.members.insert(who.clone(), m);
        self.event("joined", caller, &who, "").await?;
        Ok(JoinOutcome::Joined)
    }

    /// Adds a member directly (the operator's `member add`, or a delegate with the approve right).
    pub async fn add_member(&mut self, caller: &Caller, identity: &str, display_name: &str, rights: Rights) -> Result<Member, GroupError> {
        self.check(caller, Action::DecideJoinRequest)?;
        if !may_change_rights(self.role(caller), Rights::NONE, rights) {
            return Err(GroupError::Forbidden("cannot grant rights you do not hold".into()));
        }
        let m = self.store.add_member(self.group.id, identity, &clean_name(display_name, 64), rights.0, NotifyMode::Full.as_str()).await?;
        self.members.insert(identity.to_owned(), m.clone());
        self.event("joined", caller, identity, "added").await?;
        Ok(m)
    }

    pub async fn leave(&mut self, caller: &Caller) -> Result<(), GroupError> {
        self.check(caller, Action::Leave)?;
        let who = Self::identity_of(caller)?.to_owned();
        self.store.remove_member(self.group.id, &who).await?;
        self.members.remove(&who);
        self.event("left", caller, &who, "").await
    }

    /// Removes a member; they may join again (unlike a ban).
    pub async fn kick(&mut self, caller: &Caller, target: &str) -> Result<(), GroupError> {
        self.check(caller, Action::Kick)?;
        self.protect_founder(target)?;
        self.store.remove_member(self.group.id, target).await?;
        self.members.remove(target);
        self.event("kicked", caller, target, "").await
    }

    pub async fn ban(&mut self, caller: &Caller, target: &str, reason: &str) -> Result<Ban, GroupError> {
        self.check(caller, Action::Ban)?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(GroupError::InvalidArgument("a ban needs a reason".into()));
        }
        if Some(target) == Self::identity_of(caller).ok() {
            return Err(GroupError::InvalidArgument("you cannot ban yourself".into()));
        }
        self.protect_founder(target)?;
        let ban = self.store.ban(self.group.id, target, &clean_name(reason, 256), caller.label()).await?;
        self.members.remove(target);
        self.bans.insert(target.to_owned());
        self.event("banned", caller, target, &ban.reason).await?;
        Ok(ban)
    }

    pub async fn unban(&mut self, caller: &Caller, target: &str) -> Result<(), GroupError> {
        self.check(caller, Action::Unban)?;
        self.store.unban(self.group.id, target).await?;
        self.bans.remove(target);
        self.event("unbanned", caller, target, "").await
    }

    pub async fn bans(&self, caller: &Caller) -> Result<Vec<Ban>, GroupError> {
        self.check(caller, Action::ListBans)?;
        Ok(self.store.bans(self.group.id).await?)
    }

    /// The founder can only be removed by the operator (who can take the group back first).
    fn protect_founder(&self, target: &str) -> Result<(), GroupError> {
        if self.group.founder_identity_hash.as_deref() == Some(target) {
            return Err(GroupError::Forbidden("the founder cannot be removed".into()));
        }
        Ok(())
    }

    pub async fn set_permissions(&mut self, caller: &Caller, target: &str, rights: Rights) -> Result<Member, GroupError> {
        let role = self.check(caller, Action::SetPermissions)?;
        self.protect_founder(target)?;
        let before = self.members.get(target).map(|m| Rights(m.permissions)).ok_or_else(|| GroupError::NotFound("member".into()))?;
        if !may_change_rights(role, before, rights) {
            return Err(GroupError::Forbidden("cannot grant or revoke rights you do not hold".into()));
        }
        let m = self.store.update_member(self.group.id, target, Some(rights.0), None, None).await?;
        self.members.insert(target.to_owned(), m.clone());
        self.event("permissions_changed", caller, target, &rights.names().join(",")).await?;
        Ok(m)
    }

    /// The caller's notification choices: how posts reach them, and whether they get the digest.
    pub async fn set_notifications(
        &mut self,
        caller: &Caller,
        mode: Option<NotifyMode>,
        digest: Option<bool>,
        text_only: Option<bool>,
    ) -> Result<Member, GroupError> {
        self.check(caller, Action::SetNotifications)?;
        let who = Self::identity_of(caller)?.to_owned();
        let mut m = self.members.get(&who).cloned().ok_or_else(|| GroupError::NotFound("member".into()))?;
        if let Some(mode) = mode {
            m = self.store.update_member(self.group.id, &who, None, Some(mode.as_str()), None).await?;
        }
        if let Some(on) = digest {
            m = self.store.set_member_digest(self.group.id, &who, on).await?;
        }
        if let Some(on) = text_only {
            m = self.store.set_member_text_only(self.group.id, &who, on).await?;
        }
        self.members.insert(who, m.clone());
        Ok(m)
    }

    /// The caller's own display name (a member's setting, like notifications).
    pub async fn set_member_name(&mut self, caller: &Caller, name: &str) -> Result<Member, GroupError> {
        self.check(caller, Action::SetNotifications)?;
        let who = Self::identity_of(caller)?.to_owned();
        let name = clean_name(name, 64);
        if name.is_empty() {
            return Err(GroupError::InvalidArgument("a name cannot be empty".into()));
        }
        let m = self.store.update_member(self.group.id, &who, None, None, Some(&name)).await?;
        self.members.insert(who, m.clone());
        Ok(m)
    }

    pub async fn join_requests(&self, caller: &Caller) -> Result<Vec<JoinRequest>, GroupError> {
        self.check(caller, Action::ListJoinRequests)?;
        Ok(self.store.join_requests(self.group.id, "pending").await?)
    }

    pub async fn approve(&mut self, caller: &Caller, target: &str) -> Result<Member, GroupError> {
        self.check(caller, Action::DecideJoinRequest)?;
        let m = self.store.approve_join_request(self.group.id, target, caller.label(), NotifyMode::Full.as_str()).await?;
        self.members.insert(target.to_owned(), m.clone());
        self.event("joined", caller, target, "approved").await?;
        Ok(m)
    }

    pub async fn reject(&mut self, caller: &Caller, target: &str) -> Result<(), GroupError> {
        self.check(caller, Action::DecideJoinRequest)?;
        self.store.reject_join_request(self.group.id, target, caller.label()).await?;
        self.event("join_rejected", caller, target, "").await
    }

    pub async fn members(&self, caller: &Caller, offset: u64, limit: u64) -> Result<Vec<Member>, GroupError> {
        self.check(caller, Action::ListMembers)?;
        Ok(self.store.list_members(self.group.id, offset, limit).await?)
    }

    /// A page of history, and whether more lies beyond it (see [`Store::history_page`]).
    pub async fn history(&self, caller: &Caller, q: HistoryQuery) -> Result<(Vec<Message>, bool), GroupError> {
        self.check(caller, Action::ReadHistory)?;
        Ok(self.store.history_page(self.group.id, q).await?)
    }

    /// Stores a member's post; it is committed before this returns.
    pub async fn post(&mut self, caller: &Caller, msg: NewMessage) -> Result<InsertOutcome, GroupError> {
        self.post_many(vec![(caller.clone(), msg)]).await.pop().unwrap_or(Err(GroupError::NotFound("post".into())))
    }

    /// Stores the posts that pass the rules in one commit, in order; each gets its own outcome.
    /// Every stored post is committed before this returns, and owes one fan-out job.
    pub async fn post_many(&mut self, posts: Vec<(Caller, NewMessage)>) -> Vec<Result<InsertOutcome, GroupError>> {
        let mut outcomes: Vec<Option<Result<InsertOutcome, GroupError>>> = Vec::with_capacity(posts.len());
        let mut allowed = Vec::new();
        let mut senders = Vec::new();
        for (caller, mut msg) in posts {
            match self.check(&caller, Action::Post).and_then(|_| self.attachment_policy(&msg.fields)) {
                Ok(_) => {
                    // History keeps the name a message was posted under, after the sender leaves.
                    if let Some(m) = self.members.get(&msg.sender_identity_hash) {
                        msg.sender_display_name = m.display_name.clone();
                    }
                    msg.reply_to_id = self.reply_target(&msg.fields).await;
                    outcomes.push(None);
                    senders.push(msg.sender_identity_hash.clone());
                    allowed.push(msg);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let stored = match self.store.insert_message_batch(allowed).await {
            Ok(s) => s,
            Err(e) => {
                // One failed commit fails every post in it; none is half-stored.
                let err = GroupError::from(e);
                return outcomes
                    .into_iter()
                    .map(|o| {
                        o.unwrap_or_else(|| {
                            Err(match &err {
                                GroupError::Store(cause) => GroupError::Store(cause.clone()),
                                other => GroupError::InvalidArgument(other.to_string()),
                            })
                        })
                    })
                    .collect();
            }
        };
        let mut stored = stored.into_iter().zip(senders);
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    let (out, sender) = stored.next().ok_or_else(|| GroupError::NotFound("post".into()))?;
                    if let InsertOutcome::Inserted(id) = out {
                        crate::metrics::group_action("post", self.group.id);
                        let recipients = self.recipients(&sender).into_iter().filter(|(_, mode)| *mode != NotifyMode::None).collect();
                        self.fanout.push(FanoutJob {
                            group_id: self.group.id,
                            message_id: Some(id),
                            event_id: None,
                            reaction_id: None,
                            class: DeliveryClass::Post,
                            recipients,
                        });
                    }
                    Ok(out)
                })
            })
            .collect()
    }

    /// Refuses a post whose attachments the group does not take, saying why (the sender is told).
    fn attachment_policy(&self, fields: &[u8]) -> Result<(), GroupError> {
        let Ok(fields) = crate::wire::lxmf::decode_fields(fields) else { return Ok(()) };
        let (kinds, size) = crate::wire::lxmf::attachment_size(&fields);
        if kinds == 0 {
            return Ok(());
        }
        let refused = kinds & !(self.group.attachment_kinds as u32);
        if refused != 0 {
            return Err(GroupError::InvalidArgument(format!("{} not allowed in this group", kind_names(refused))));
        }
        if size as i64 > self.group.attachment_max_bytes {
            return Err(GroupError::InvalidArgument(format!(
                "attachments of {} are over this group's limit of {}",
                human_bytes(size as u64),
                human_bytes(self.group.attachment_max_bytes.max(0) as u64)
            )));
        }
        Ok(())
    }

    /// The attachments of a message, for members who were sent it without them.
    pub async fn attachments(&self, caller: &Caller, id: i64) -> Result<Vec<crate::wire::lxmf::Attachment>, GroupError> {
        self.check(caller, Action::ReadHistory)?;
        let msg = self.store.message(self.group.id, id).await?;
        if msg.deleted_at.is_some() {
            return Err(GroupError::NotFound("message (deleted)".into()));
        }
        let fields = crate::wire::lxmf::decode_fields(&msg.fields).unwrap_or_default();
        let found = crate::wire::lxmf::attachments(&fields);
        if found.is_empty() {
            return Err(GroupError::NotFound("attachment".into()));
        }
        Ok(found)
    }

    /// The group message a post's `FIELD_REPLY_TO` names (the original's hash or any member's
    /// copy's); `None` when it names none of ours. A store fault leaves the reply unthreaded
    /// rather than refused: the post itself is what must not be lost.
    async fn reply_target(&self, fields: &[u8]) -> Option<i64> {
        let fields = crate::wire::lxmf::decode_fields(fields).ok()?;
        let hash = crate::wire::lxmf::reply_to_field(&fields)?;
        match self.store.resolve_message_hash(self.group.id, &hash).await {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(%err, group = self.group.id, "cannot resolve a reply's target; stored without it");
                None
            }
        }
    }

    /// Adds (or removes) the caller's reaction to a message, named by id or by the hash of the
    /// original or of any member's copy. A new reaction goes to the full-mode members (not the
    /// reactor), each naming their own copy of the message; removal is history only.
    pub async fn react(&mut self, caller: &Caller, target: &MessageRef, emoji: &str, remove: bool) -> Result<(), GroupError> {
        self.check(caller, Action::Post)?;
        let who = Self::identity_of(caller)?.to_owned();
        if !crate::wire::lxmf::valid_reaction(emoji) {
            return Err(GroupError::InvalidArgument(format!("a reaction is one emoji of at most {} bytes", crate::wire::lxmf::MAX_REACTION_LEN)));
        }
        let id = match target {
            MessageRef::Id(id) => *id,
            MessageRef::Hash(h) => {
                let hash: [u8; 32] = hex::decode(h)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| GroupError::InvalidArgument("a message hash is 64 hex characters".into()))?;
                self.store.resolve_message_hash(self.group.id, &hash).await?.ok_or_else(|| GroupError::NotFound("message".into()))?
            }
        };
        let msg = self.store.message(self.group.id, id).await?;
        if msg.deleted_at.is_some() {
            return Err(GroupError::NotFound("message (deleted)".into()));
        }
        if remove {
            return match self.store.remove_reaction(id, &who, emoji).await? {
                true => Ok(()),
                false => Err(GroupError::NotFound("reaction".into())),
            };
        }
        match self.store.add_reaction(self.group.id, id, &who, emoji, MAX_REACTIONS_PER_MEMBER).await? {
            ReactionOutcome::Added(reaction) => {
                crate::metrics::group_action("reaction", self.group.id);
                let recipients = self.recipients(&who).into_iter().filter(|(_, mode)| *mode == NotifyMode::Full).collect();
                self.fanout.push(FanoutJob {
                    group_id: self.group.id,
                    message_id: Some(id),
                    event_id: None,
                    reaction_id: Some(reaction),
                    class: DeliveryClass::Direct,
                    recipients,
                });
                Ok(())
            }
            ReactionOutcome::Duplicate => Ok(()),
            ReactionOutcome::Capped { max } => Err(GroupError::InvalidArgument(format!("at most {max} reactions per member on a message"))),
        }
    }

    /// Deletes a message: one's own with membership, anyone's with the delete right. Its copies
    /// still queued are stopped: no member is sent a message after its tombstone.
    pub async fn delete_message(&mut self, caller: &Caller, id: i64) -> Result<Message, GroupError> {
        let msg = self.store.message(self.group.id, id).await?;
        let own = Self::identity_of(caller).ok() == Some(msg.sender_identity_hash.as_str());
        self.check(caller, if own { Action::DeleteOwnMessage } else { Action::DeleteAnyMessage })?;
        let msg = self.store.delete_message(self.group.id, id, caller.label()).await?;
        let stopped = self.store.cancel_copies(id).await?;
        if stopped > 0 {
            tracing::info!(group = self.group.id, message = id, stopped, "queued copies of a deleted message stopped");
        }
        self.event("message_deleted", caller, &id.to_string(), "").await?;
        Ok(msg)
    }

    pub async fn rename(&mut self, caller: &Caller, public_name: Option<&str>, private_name: Option<&str>) -> Result<(), GroupError> {
        self.check(caller, Action::Rename)?;
        let mut patch = GroupPatch::default();
        if let Some(n) = public_name {
            patch.public_name = Some(validate_group_name(n)?);
        }
        if let Some(n) = private_name {
            patch.private_name = Some(if n.trim().is_empty() { None } else { Some(validate_group_name(n)?) });
        }
        self.group = self.store.update_group(self.group.id, patch).await?;
        self.event("renamed", caller, "", &self.group.public_name.clone()).await
    }

    pub async fn update_settings(&mut self, caller: &Caller, s: Settings) -> Result<(), GroupError> {
        self.check(caller, Action::UpdateSettings)?;
        let cost = |c: Option<u32>| -> Result<Option<i32>, GroupError> {
            match c {
                Some(c) if !crate::domain::valid_stamp_cost(c.into()) => Err(GroupError::InvalidArgument(format!("stamp cost {c} outside 0-254"))),
                Some(c) => Ok(Some(c as i32)),
                None => Ok(None),
            }
        };
        let patch = GroupPatch {
            visibility: s.visibility.map(|v| v.as_str().to_owned()),
            join_stamp_cost: cost(s.join_stamp_cost)?,
            post_stamp_cost: cost(s.post_stamp_cost)?,
            history_public: s.history_public,
            listed: s.listed,
            attachment_max_bytes: match s.attachment_max_bytes {
                Some(n) if n as usize > crate::wire::lxmf::MAX_PACKED_LEN => {
                    return Err(GroupError::InvalidArgument(format!("attachment limit {n} over {} bytes", crate::wire::lxmf::MAX_PACKED_LEN)));
                }
                n => n.map(i64::from),
            },
            attachment_kinds: match s.attachment_kinds {
                Some(k) if k & !ALL_KINDS != 0 => return Err(GroupError::InvalidArgument(format!("unknown attachment kind bits {k:#x}"))),
                k => k.map(|k| k as i32),
            },
            ..Default::default()
        };
        self.group = self.store.update_group(self.group.id, patch).await?;
        self.event("settings_changed", caller, "", "").await
    }

    /// Deletes the group and everything in it (founder or owner). The caller then asks the
    /// supervisor to stop the actor and drop its destinations.
    pub async fn delete_group(&mut self, caller: &Caller) -> Result<(), GroupError> {
        self.check(caller, Action::DeleteGroup)?;
        self.store.delete_group(self.group.id).await?;
        crate::metrics::group_action("group_deleted", self.group.id);
        self.deleted = true;
        self.members.clear();
        Ok(())
    }

    /// Hands the founder role to another member, who gets every right.
    pub async fn transfer_founder(&mut self, caller: &Caller, target: &str) -> Result<(), GroupError> {
        self.check(caller, Action::TransferFounder)?;
        if !self.members.contains_key(target) {
            return Err(GroupError::NotFound("member".into()));
        }
        if self.group.founder_identity_hash.as_deref() == Some(target) {
            return Err(GroupError::InvalidArgument("that member is the founder already".into()));
        }
        let m = self.store.update_member(self.group.id, target, Some(Rights::ALL.0), None, None).await?;
        self.members.insert(target.to_owned(), m);
        self.group = self.store.update_group(self.group.id, GroupPatch { founder_identity_hash: Some(Some(target.to_owned())), ..Default::default() }).await?;
        self.event("founder_transferred", caller, target, "").await
    }

    /// Takes the group back from its founder (the operator only); a founder who is a member stays
    /// one, without rights.
    pub async fn clear_founder(&mut self, caller: &Caller) -> Result<(), GroupError> {
        if *caller != Caller::Owner {
            return Err(GroupError::Forbidden("only the operator takes a group back".into()));
        }
        let Some(founder) = self.group.founder_identity_hash.clone() else {
            return Ok(());
        };
        self.group = self.store.update_group(self.group.id, GroupPatch { founder_identity_hash: Some(None), ..Default::default() }).await?;
        if self.members.contains_key(&founder) {
            self.set_permissions(caller, &founder, Rights::NONE).await?;
        }
        Ok(())
    }

    /// The name a caller may see: the private name only for members and the owner.
    pub fn visible_name(&self, caller: &Caller) -> String {
        let insider = matches!(self.role(caller), Role::Owner | Role::Founder | Role::Member(_));
        match (&self.group.private_name, self.visibility(), insider) {
            (Some(private), _, true) => private.clone(),
            (_, Visibility::Private, false) => PRIVATE_GROUP_NAME.to_owned(),
            _ => self.group.public_name.clone(),
        }
    }

    /// The name announced to the whole network.
    pub fn announced_name(&self) -> &str {
        match self.visibility() {
            Visibility::Private => PRIVATE_GROUP_NAME,
            Visibility::Public => &self.group.public_name,
        }
    }
}

/// What strangers see of a private group.
pub const PRIVATE_GROUP_NAME: &str = "Private Group";

/// Group names: trimmed, 1 to 64 characters, no control characters.
pub fn validate_group_name(name: &str) -> Result<String, GroupError> {
    let n = clean_name(name, 64);
    if n.is_empty() {
        return Err(GroupError::InvalidArgument("a name cannot be empty".into()));
    }
    Ok(n)
}

/// Strips control characters (they garble terminals and stock clients) and bounds the length.
pub fn clean_name(s: &str, max_chars: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max_chars).collect::<String>().trim().to_owned()
}

/// What an operator or a founder chooses when creating a group.
#[derive(Clone, Debug, Default)]
pub struct CreateGroup {
    pub name: String,
    pub private: bool,
    pub private_name: Option<String>,
    pub join_stamp_cost: u32,
    pub post_stamp_cost: u32,
    pub founder: Option<String>,
    /// An imported identity (64-byte private key); a fresh one is generated when `None`.
    pub private_key: Option<Vec<u8>>,
}

/// Creates a group with its own Reticulum identity and, for a founder, their membership with every right.
pub async fn create_group(store: &Store, c: CreateGroup) -> Result<Group, GroupError> {
    use crate::wire::identity::GroupIdentity;
    for cost in [c.join_stamp_cost, c.post_stamp_cost] {
        if !crate::domain::valid_stamp_cost(cost.into()) {
            return Err(GroupError::InvalidArgument(format!("stamp cost {cost} outside 0-254")));
        }
    }
    let name = validate_group_name(&c.name)?;
    let private_name = c.private_name.as_deref().map(validate_group_name).transpose()?;
    let id = match &c.private_key {
        Some(k) => GroupIdentity::from_private_key(k).map_err(|e| GroupError::InvalidArgument(e.to_string()))?,
        None => GroupIdentity::generate(),
    };
    let group = store
        .create_group(crate::store::NewGroup {
            private_name,
            visibility: if c.private { "private" } else { "public" }.to_owned(),
            join_stamp_cost: c.join_stamp_cost as i32,
            post_stamp_cost: c.post_stamp_cost as i32,
            founder_identity_hash: c.founder.clone(),
            ..group_row(&id, name)
        })
        .await?;
    if let Some(founder) = c.founder {
        store.add_member(group.id, &founder, "founder", Rights::ALL.0, NotifyMode::Full.as_str()).await?;
        store.insert_event(group.id, "created", &founder, &founder, "", false).await?;
    } else {
        store.insert_event(group.id, "created", "owner", "", "", false).await?;
    }
    Ok(group)
}

/// The group's `lxma://` contact link (its `lxmf.delivery` hash and public key), which stock
/// LXMF clients scan or paste to write to the group at once; `None` if the stored key is invalid.
pub fn contact_link(g: &Group) -> Option<String> {
    let id = crate::wire::identity::GroupIdentity::from_private_key(&g.identity_private_key).ok()?;
    Some(crate::wire::identity::contact_link(&id.destination(crate::wire::identity::LXMF_ASPECT), &id.public_key))
}

/// The row for a group with this identity: public, free to join and post, history public.
pub fn group_row(id: &crate::wire::identity::GroupIdentity, public_name: String) -> crate::store::NewGroup {
    use crate::wire::identity::{GROUP_ASPECT, LXMF_ASPECT};
    crate::store::NewGroup {
        identity_hash: hex::encode(id.hash),
        identity_private_key: id.private_key.to_vec(),
        group_dest_hash: hex::encode(id.destination(GROUP_ASPECT)),
        lxmf_dest_hash: hex::encode(id.destination(LXMF_ASPECT)),
        public_name,
        private_name: None,
        visibility: "public".into(),
        join_stamp_cost: 0,
        post_stamp_cost: 0,
        history_public: true,
        listed: false,
        founder_identity_hash: None,
    }
}

/// Every operation a caller can ask of a group, whatever the entry point (link API, text command, CLI).
///
/// Serializable so the CLI can hand an operation to a running server (see [`crate::admin`]); history
/// and posts never travel that way.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Info,
    /// `stamp_verified` is set by the caller's side after the stamp passed the worker pool.
    Join {
        display_name: String,
        note: String,
        stamp_verified: bool,
    },
    Leave,
    Members {
        offset: u64,
        limit: u64,
    },
    JoinRequests,
    Approve {
        identity: String,
    },
    Reject {
        identity: String,
    },
    #[serde(skip)]
    History(HistoryQuery),
    #[serde(skip)]
    Post(NewMessage),
    DeleteMessage {
        id: i64,
    },
    /// Adds or removes the caller's reaction (an emoji) to a message.
    React {
        target: MessageRef,
        emoji: String,
        remove: bool,
    },
    Kick {
        identity: String,
    },
    Ban {
        identity: String,
        reason: String,
    },
    Unban {
        identity: String,
    },
    Bans,
    SetPermissions {
        identity: String,
        rights: Rights,
    },
    Rename {
        public_name: Option<String>,
        private_name: Option<String>,
    },
    UpdateSettings(Settings),
    /// How posts reach the caller, and whether they get the membership digest; `None` keeps it.
    SetNotifications {
        mode: Option<NotifyMode>,
        digest: Option<bool>,
        /// Posts without their attachments (a line says what was left out); `None` keeps it.
        #[serde(default)]
        text_only: Option<bool>,
    },
    /// The attachments of one message, for a member who got it text-only.
    Attachments {
        id: i64,
    },
    /// The caller's own display name in the group.
    SetMemberName {
        name: String,
    },
    DeleteGroup,
    TransferFounder {
        identity: String,
    },
    /// The operator adds a member directly (no request, no stamp).
    AddMember {
        identity: String,
        display_name: String,
        rights: Rights,
    },
    /// The operator takes a self-service group back: the founder keeps no rights.
    ClearFounder,
}

/// A message as a caller names it: its history id, or an LXMF hash (hex) of the original or of
/// any member's copy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRef {
    Id(i64),
    Hash(String),
}

/// What the caller sees of the group in `/api/v1/info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoView {
    pub name: String,
    pub visibility: Visibility,
    pub member_count: u64,
    pub join_stamp_cost: u32,
    pub post_stamp_cost: u32,
    pub history_public: bool,
    pub is_member: bool,
    /// Never sent to clients; the LXMF path uses it to drop a banned sender's posts silently.
    pub banned: bool,
    pub rights: Rights,
    pub notify_mode: Option<NotifyMode>,
    /// Whether the caller receives the membership digest.
    pub digest: bool,
    pub lxmf_dest_hash: String,
}

/// The successful result of an [`Op`].
#[derive(Clone, Debug)]
pub enum Reply {
    Done,
    Info(InfoView),
    Joined(JoinOutcome),
    Members {
        members: Vec<Member>,
        total: u64,
    },
    JoinRequests(Vec<JoinRequest>),
    /// History with each sender's display name as they posted, and the group's events when asked for.
    History {
        messages: Vec<(Message, String)>,
        events: Vec<Event>,
        /// Reaction counts per message id of the page: `(emoji, count)`, most frequent first.
        reactions: HashMap<i64, Vec<(String, u64)>>,
        /// More messages lie beyond this page, in the direction it was read.
        more: bool,
        /// More events lie below the oldest of this page's events.
        more_events: bool,
    },
    Posted(InsertOutcome),
    Bans(Vec<Ban>),
    Attachments(Vec<crate::wire::lxmf::Attachment>),
}

impl GroupCore {
    /// What `caller` may see of the group, from memory (no store access), rules applied.
    pub fn info_for(&self, caller: &Caller) -> Result<InfoView, GroupError> {
        self.check(caller, Action::Info)?;
        Ok(self.info(caller))
    }

    pub fn info(&self, caller: &Caller) -> InfoView {
        let member = match caller {
            Caller::Identity(h) => self.members.get(h),
            _ => None,
        };
        InfoView {
            name: self.visible_name(caller),
            visibility: self.visibility(),
            member_count: self.members.len() as u64,
            join_stamp_cost: self.group.join_stamp_cost.max(0) as u32,
            post_stamp_cost: self.group.post_stamp_cost.max(0) as u32,
            history_public: self.group.history_public,
            is_member: member.is_some(),
            banned: self.role(caller) == Role::Banned,
            rights: match self.role(caller) {
                Role::Owner | Role::Founder => Rights::ALL,
                _ => member.map(|m| Rights(m.permissions)).unwrap_or(Rights::NONE),
            },
            notify_mode: member.and_then(|m| NotifyMode::parse(&m.notify_mode)),
            digest: member.is_some_and(|m| m.digest),
            lxmf_dest_hash: self.group.lxmf_dest_hash.clone(),
        }
    }

    /// The join stamp cost this caller must pay now (members and the owner pay nothing).
    pub fn join_cost_for(&self, caller: &Caller) -> u32 {
        match self.role(caller) {
            Role::NonMember => self.group.join_stamp_cost.max(0) as u32,
            _ => 0,
        }
    }

    /// Runs one operation with the rules applied.
    pub async fn apply(&mut self, caller: &Caller, op: Op) -> Result<Reply, GroupError> {
        if self.deleted {
            return Err(GroupError::NotFound("group".into()));
        }
        Ok(match op {
            Op::Info => Reply::Info(self.info_for(caller)?),
            Op::Join { display_name, note, stamp_verified } => {
                self.check(caller, Action::Join)?;
                let cost = self.join_cost_for(caller);
                if cost > 0 && !stamp_verified {
                    return Err(GroupError::StampRequired { cost });
                }
                Reply::Joined(self.join(caller, &display_name, &note).await?)
            }
            Op::Leave => {
                self.leave(caller).await?;
                Reply::Done
            }
            Op::Members { offset, limit } => {
                let members = self.members(caller, offset, limit).await?;
                Reply::Members { members, total: self.members.len() as u64 }
            }
            Op::JoinRequests => Reply::JoinRequests(self.join_requests(caller).await?),
            Op::Approve { identity } => {
                self.approve(caller, &identity).await?;
                Reply::Done
            }
            Op::Reject { identity } => {
                self.reject(caller, &identity).await?;
                Reply::Done
            }
            Op::History(q) => {
                let events_after = q.events_after;
                let limit = q.limit;
                let (rows, more) = self.history(caller, q).await?;
                // One event more is read to know whether the page hides older ones.
                let mut events = match events_after {
                    Some(after) => self.store.events_after(self.group.id, after, limit.saturating_add(1)).await?,
                    None => Vec::new(),
                };
                let more_events = events.len() as u64 > limit;
                events.truncate(limit as usize);
                let messages = rows
                    .into_iter()
                    .map(|m| {
                        let name = if m.sender_display_name.is_empty() {
                            // Rows stored before names were kept: the current name, if still a member.
                            self.members.get(&m.sender_identity_hash).map(|s| s.display_name.clone()).unwrap_or_default()
                        } else {
                            m.sender_display_name.clone()
                        };
                        (m, name)
                    })
                    .collect::<Vec<_>>();
                let ids: Vec<i64> = messages.iter().map(|(m, _)| m.id).collect();
                let reactions = self.store.reaction_counts(&ids).await?;
                Reply::History { messages, events, reactions, more, more_events }
            }
            Op::Post(msg) => Reply::Posted(self.post(caller, msg).await?),
            Op::DeleteMessage { id } => {
                self.delete_message(caller, id).await?;
                Reply::Done
            }
            Op::React { target, emoji, remove } => {
                self.react(caller, &target, &emoji, remove).await?;
                Reply::Done
            }
            Op::Kick { identity } => {
                self.kick(caller, &identity).await?;
                Reply::Done
            }
            Op::Ban { identity, reason } => {
                self.ban(caller, &identity, &reason).await?;
                Reply::Done
            }
            Op::Unban { identity } => {
                self.unban(caller, &identity).await?;
                Reply::Done
            }
            Op::Bans => Reply::Bans(self.bans(caller).await?),
            Op::SetPermissions { identity, rights } => {
                self.set_permissions(caller, &identity, rights).await?;
                Reply::Done
            }
            Op::Rename { public_name, private_name } => {
                self.rename(caller, public_name.as_deref(), private_name.as_deref()).await?;
                Reply::Done
            }
            Op::UpdateSettings(s) => {
                self.update_settings(caller, s).await?;
                Reply::Done
            }
            Op::SetNotifications { mode, digest, text_only } => {
                self.set_notifications(caller, mode, digest, text_only).await?;
                Reply::Done
            }
            Op::Attachments { id } => Reply::Attachments(self.attachments(caller, id).await?),
            Op::SetMemberName { name } => {
                self.set_member_name(caller, &name).await?;
                Reply::Done
            }
            Op::DeleteGroup => {
                self.delete_group(caller).await?;
                Reply::Done
            }
            Op::TransferFounder { identity } => {
                self.transfer_founder(caller, &identity).await?;
                Reply::Done
            }
            Op::AddMember { identity, display_name, rights } => {
                self.add_member(caller, &identity, &display_name, rights).await?;
                Reply::Done
            }
            Op::ClearFounder => {
                self.clear_founder(caller).await?;
                Reply::Done
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: history lost a sender's display name once they left or were banned.
    #[tokio::test]
    async fn history_keeps_the_name_a_message_was_posted_under() {
        let t = crate::store::testing::sqlite().await.expect("store");
        let g = create_group(&t.store, CreateGroup { name: "names".into(), ..Default::default() }).await.expect("group");
        let mut core = GroupCore::load(t.store.clone(), g.clone()).await.expect("core");
        let (alice, bob) = ("a".repeat(32), "b".repeat(32));
        for (who, name) in [(&alice, "Alice"), (&bob, "Bob")] {
            core.join(&Caller::Identity(who.clone()), name, "").await.expect("join");
        }
        for (who, hash) in [(&alice, "1"), (&bob, "2")] {
            let msg = NewMessage {
                group_id: g.id,
                message_hash: hash.repeat(64),
                sender_identity_hash: who.clone(),
                sender_display_name: String::new(),
                timestamp: 1.0,
                title: Vec::new(),
                content: b"hi".to_vec(),
                fields: vec![0x80],
                reply_to_id: None,
            };
            core.post(&Caller::Identity(who.clone()), msg).await.expect("post");
        }
        core.leave(&Caller::Identity(alice.clone())).await.expect("leave");
        core.ban(&Caller::Owner, &bob, "spam").await.expect("ban");
        let Reply::History { messages, .. } = core.apply(&Caller::Owner, Op::History(HistoryQuery { limit: 10, ..Default::default() })).await.expect("history")
        else {
            panic!("not history");
        };
        let names: Vec<&str> = messages.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, vec!["Bob", "Alice"]);
    }

    /// Bad input to replies, reactions and attachments gets a clear error, and nothing is stored.
    #[tokio::test]
    async fn threads_and_attachments_refuse_bad_input() {
        use rmpv::Value;
        let t = crate::store::testing::sqlite().await.expect("store");
        let g = create_group(&t.store, CreateGroup { name: "bad".into(), ..Default::default() }).await.expect("group");
        let mut core = GroupCore::load(t.store.clone(), g.clone()).await.expect("core");
        let alice = Caller::Identity("a".repeat(32));
        core.join(&alice, "Alice", "").await.expect("join");
        let fields = |f: Vec<(Value, Value)>| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &Value::Map(f)).expect("encode");
            out
        };
        let post = |hash: &str, f: Vec<u8>| NewMessage {
            group_id: g.id,
            message_hash: hash.repeat(64),
            sender_identity_hash: "a".repeat(32),
            sender_display_name: String::new(),
            timestamp: 1.0,
            title: Vec::new(),
            content: b"hi".to_vec(),
            fields: f,
            reply_to_id: None,
        };
        // A reply to a hash the group never saw is stored unthreaded, not refused.
        let unknown = vec![(Value::from(crate::wire::lxmf::FIELD_REPLY_TO), Value::Binary(vec![9; 32]))];
        let id = core.post(&alice, post("1", fields(unknown))).await.expect("post").id();
        assert_eq!(core.store.message(g.id, id).await.expect("row").reply_to_id, None);
        // Reactions: to an unknown hash, an unknown id, too long, or by a stranger.
        let react = |target| Op::React { target, emoji: "👍".into(), remove: false };
        assert!(matches!(core.apply(&alice, react(MessageRef::Hash("9".repeat(64)))).await, Err(GroupError::NotFound(_))));
        assert!(matches!(core.apply(&alice, react(MessageRef::Hash("zz".into()))).await, Err(GroupError::InvalidArgument(_))));
        assert!(matches!(core.apply(&alice, react(MessageRef::Id(id + 7))).await, Err(GroupError::NotFound(_))));
        let long = Op::React { target: MessageRef::Id(id), emoji: "🎉".repeat(9), remove: false };
        assert!(matches!(core.apply(&alice, long).await, Err(GroupError::InvalidArgument(_))));
        assert!(matches!(core.apply(&Caller::Identity("c".repeat(32)), react(MessageRef::Id(id))).await, Err(GroupError::Forbidden(_))));
        assert_eq!(core.store.count_reactions(id).await.expect("count"), 0);
        // Attachments: a kind the group refuses, or too many bytes; and bad settings.
        let settings = |max, kinds| Op::UpdateSettings(Settings { attachment_max_bytes: max, attachment_kinds: kinds, ..Default::default() });
        assert!(matches!(core.apply(&Caller::Owner, settings(None, Some(8))).await, Err(GroupError::InvalidArgument(_))));
        assert!(matches!(core.apply(&Caller::Owner, settings(Some(2_000_000), None)).await, Err(GroupError::InvalidArgument(_))));
        core.apply(&Caller::Owner, settings(Some(100), Some(crate::wire::lxmf::KIND_IMAGE))).await.expect("settings");
        let image = |n| vec![(Value::from(crate::wire::lxmf::FIELD_IMAGE), Value::Array(vec![Value::from("png"), Value::Binary(vec![0; n])]))];
        let audio = vec![(Value::from(crate::wire::lxmf::FIELD_AUDIO), Value::Array(vec![Value::from(1), Value::Binary(vec![0; 10])]))];
        let refused = core.post(&alice, post("2", fields(audio))).await;
        assert!(matches!(&refused, Err(GroupError::InvalidArgument(why)) if why.contains("audio not allowed")), "{refused:?}");
        let refused = core.post(&alice, post("3", fields(image(200)))).await;
        assert!(matches!(&refused, Err(GroupError::InvalidArgument(why)) if why.contains("over this group's limit of 100 B")), "{refused:?}");
        let ok = core.post(&alice, post("4", fields(image(50)))).await.expect("within the limit").id();
        assert_eq!(core.store.history(g.id, HistoryQuery { limit: 10, ..Default::default() }).await.expect("history").len(), 2, "nothing refused is stored");
        let Reply::Attachments(found) = core.apply(&alice, Op::Attachments { id: ok }).await.expect("attachments") else { panic!("not attachments") };
        assert_eq!((found.len(), found[0].data.len()), (1, 50));
        assert!(matches!(core.apply(&alice, Op::Attachments { id }).await, Err(GroupError::NotFound(_))), "a message without attachments");
    }
}
