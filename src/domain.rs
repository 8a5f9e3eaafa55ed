//! The group rules: roles, delegated rights, and the one authorization function every entry point uses.
//!
//! The link API, the LXMF text commands and the operator CLI all ask [`authorize`]; there is no
//! second rule set.

use serde::{Deserialize, Serialize};

/// Delegated rights, stored as a bit set on the membership row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rights(pub i64);

impl Rights {
    pub const APPROVE: Rights = Rights(1);
    pub const KICK: Rights = Rights(1 << 1);
    pub const BAN: Rights = Rights(1 << 2);
    pub const DELETE: Rights = Rights(1 << 3);
    pub const RENAME: Rights = Rights(1 << 4);
    pub const SETTINGS: Rights = Rights(1 << 5);
    pub const PERMISSIONS: Rights = Rights(1 << 6);
    pub const NONE: Rights = Rights(0);
    pub const ALL: Rights = Rights(0x7f);

    /// Names as used by the CLI, text commands and docs.
    pub const NAMES: &'static [(&'static str, Rights)] = &[
        ("approve", Rights::APPROVE),
        ("kick", Rights::KICK),
        ("ban", Rights::BAN),
        ("delete", Rights::DELETE),
        ("rename", Rights::RENAME),
        ("settings", Rights::SETTINGS),
        ("permissions", Rights::PERMISSIONS),
    ];

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Parses `kick,ban` (or `all`, `none`); unknown names are an error naming the culprit.
    pub fn parse_list(s: &str) -> Result<Rights, String> {
        let mut out = Rights::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out = match part {
                "all" => Rights::ALL,
                "none" => out,
                _ => out.union(
                    Self::NAMES
                        .iter()
                        .find(|(n, _)| *n == part)
                        .map(|(_, r)| *r)
                        .ok_or_else(|| format!("unknown right `{part}` (known: all, none, {})", Self::known()))?,
                ),
            };
        }
        Ok(out)
    }

    fn known() -> String {
        Self::NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    }

    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES.iter().filter(|(_, r)| self.contains(*r)).map(|(n, _)| *n).collect()
    }
}

/// The order in which the outbox spends send capacity: every post copy before any direct notice,
/// every direct notice before any digest. Stored on each outbox row, so the order survives a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeliveryClass {
    /// A member's copy of a post (full or short).
    Post = 0,
    /// A notice for one person: the subject of a kick or ban, approvers of pending join requests.
    Direct = 1,
    /// The periodic membership digest for members who opted in.
    Digest = 2,
}

impl DeliveryClass {
    pub const ALL: [DeliveryClass; 3] = [DeliveryClass::Post, DeliveryClass::Direct, DeliveryClass::Digest];

    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// Reads a stored class; an unknown value sorts last.
    pub fn from_i16(v: i16) -> Self {
        match v {
            0 => DeliveryClass::Post,
            1 => DeliveryClass::Direct,
            _ => DeliveryClass::Digest,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DeliveryClass::Post => "post",
            DeliveryClass::Direct => "direct",
            DeliveryClass::Digest => "digest",
        }
    }
}

/// Public groups: anyone joins. Private groups: an admin approves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// How a member wants new messages: the whole message, a short notice, or nothing (pull only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyMode {
    Full,
    Short,
    None,
}

impl NotifyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyMode::Full => "full",
            NotifyMode::Short => "short",
            NotifyMode::None => "none",
        }
    }

    /// Accepts `off` as a synonym of `none`, as the `/notify off` text command does.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(NotifyMode::Full),
            "short" => Some(NotifyMode::Short),
            "none" | "off" => Some(NotifyMode::None),
            _ => None,
        }
    }
}

/// Who is asking, as far as the rules are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The holder of the group identity: the operator, through the CLI.
    Owner,
    /// The member who founded the group (or was handed it): every right, plus deleting the group
    /// and handing it on. Stored rights don't limit a founder; the operator can take the group back.
    Founder,
    /// A member, with whatever rights were delegated to them.
    Member(Rights),
    /// Identified, not a member, not banned.
    NonMember,
    Banned,
    /// The link was never identified.
    Anonymous,
}

/// Everything a caller can ask a group to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Info,
    Join,
    Leave,
    ListMembers,
    ListJoinRequests,
    DecideJoinRequest,
    ReadHistory,
    Post,
    DeleteOwnMessage,
    DeleteAnyMessage,
    Kick,
    Ban,
    Unban,
    ListBans,
    SetPermissions,
    Rename,
    UpdateSettings,
    SetNotifications,
    /// Delete the whole group (founder or owner).
    DeleteGroup,
    /// Hand the founder role to another member (founder or owner).
    TransferFounder,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::Info,
        Action::Join,
        Action::Leave,
        Action::ListMembers,
        Action::ListJoinRequests,
        Action::DecideJoinRequest,
        Action::ReadHistory,
        Action::Post,
        Action::DeleteOwnMessage,
        Action::DeleteAnyMessage,
        Action::Kick,
        Action::Ban,
        Action::Unban,
        Action::ListBans,
        Action::SetPermissions,
        Action::Rename,
        Action::UpdateSettings,
        Action::SetNotifications,
        Action::DeleteGroup,
        Action::TransferFounder,
    ];

    /// The right a delegated member needs, if the action is an admin one.
    pub fn required_right(self) -> Option<Rights> {
        Some(match self {
            Action::ListJoinRequests | Action::DecideJoinRequest => Rights::APPROVE,
            Action::DeleteAnyMessage => Rights::DELETE,
            Action::Kick => Rights::KICK,
            Action::Ban | Action::Unban | Action::ListBans => Rights::BAN,
            Action::SetPermissions => Rights::PERMISSIONS,
            Action::Rename => Rights::RENAME,
            Action::UpdateSettings => Rights::SETTINGS,
            _ => return None,
        })
    }
}

/// Why the rules said no; maps one to one onto the API error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The caller must identify on the link first.
    Unauthenticated,
    Forbidden,
}

/// The group settings the rules depend on.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub visibility: Visibility,
    pub history_public: bool,
}

/// The one authorization function.
pub fn authorize(role: Role, action: Action, policy: Policy) -> Result<(), Denied> {
    use Action::*;
    let public = policy.visibility == Visibility::Public;
    match role {
        Role::Owner => Ok(()),
        Role::Anonymous => match action {
            Info => Ok(()),
            ReadHistory if public && policy.history_public => Ok(()),
            ListMembers if public => Ok(()),
            _ => Err(Denied::Unauthenticated),
        },
        Role::Banned => match action {
            Info => Ok(()),
            _ => Err(Denied::Forbidden),
        },
        Role::NonMember => match action {
            Info | Join => Ok(()),
            ReadHistory if public && policy.history_public => Ok(()),
            ListMembers if public => Ok(()),
            _ => Err(Denied::Forbidden),
        },
        // A founder who left would orphan the group: hand it over (transfer) or delete it instead.
        Role::Founder if action == Leave => Err(Denied::Forbidden),
        Role::Founder => Ok(()),
        Role::Member(_) if matches!(action, DeleteGroup | TransferFounder) => Err(Denied::Forbidden),
        Role::Member(rights) => match action.required_right() {
            Some(r) if rights.contains(r) => Ok(()),
            Some(_) => Err(Denied::Forbidden),
            None => Ok(()),
        },
    }
}

/// A delegate may grant or revoke only rights they hold themselves; the owner may do anything.
pub fn may_change_rights(granter: Role, before: Rights, after: Rights) -> bool {
    match granter {
        Role::Owner | Role::Founder => true,
        Role::Member(held) if held.contains(Rights::PERMISSIONS) => {
            let changed = Rights(before.0 ^ after.0);
            held.contains(changed)
        }
        _ => false,
    }
}

/// Stamp costs are LXMF costs: 0 means none, 1..=254 leading zero bits.
pub fn valid_stamp_cost(cost: i64) -> bool {
    (0..=254).contains(&cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_and_name() {
        assert_eq!(Rights::parse_list("kick,ban").expect("parse"), Rights(Rights::KICK.0 | Rights::BAN.0));
        assert_eq!(Rights::parse_list("all").expect("parse"), Rights::ALL);
        assert!(Rights::parse_list("fly").is_err());
        assert_eq!(Rights::ALL.names().len(), Rights::NAMES.len());
    }

    #[test]
    fn delegates_cannot_grant_what_they_lack() {
        let kick_and_perm = Role::Member(Rights(Rights::KICK.0 | Rights::PERMISSIONS.0));
        assert!(may_change_rights(kick_and_perm, Rights::NONE, Rights::KICK));
        assert!(!may_change_rights(kick_and_perm, Rights::NONE, Rights::BAN));
        assert!(!may_change_rights(Role::Member(Rights::KICK), Rights::NONE, Rights::KICK));
        assert!(may_change_rights(Role::Owner, Rights::NONE, Rights::ALL));
    }
}
