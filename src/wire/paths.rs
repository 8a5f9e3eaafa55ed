//! The link API's request paths, as a client calls them (proto/meshgroup.proto has the table).
//!
//! The server's routing tables (`api::Endpoint::ALL`, `api::hosting::Path::ALL`) must name the
//! same strings; `tests/client.rs` checks that every path here is routed there.

pub const INFO: &str = "/api/v1/info";
pub const JOIN: &str = "/api/v1/join";
pub const LEAVE: &str = "/api/v1/leave";
pub const MEMBERS: &str = "/api/v1/members";
pub const JOIN_REQUESTS: &str = "/api/v1/join-requests";
pub const APPROVE: &str = "/api/v1/join-requests/approve";
pub const REJECT: &str = "/api/v1/join-requests/reject";
pub const MESSAGES: &str = "/api/v1/messages";
pub const SEND: &str = "/api/v1/messages/send";
pub const DELETE: &str = "/api/v1/messages/delete";
pub const KICK: &str = "/api/v1/members/kick";
pub const BAN: &str = "/api/v1/members/ban";
pub const UNBAN: &str = "/api/v1/members/unban";
pub const PERMISSIONS: &str = "/api/v1/members/permissions";
pub const RENAME: &str = "/api/v1/display-name/update";
pub const SETTINGS: &str = "/api/v1/settings/update";
pub const NOTIFICATIONS: &str = "/api/v1/notifications/update";
/// On the server's `meshchat.groupserver` destination.
pub const DIRECTORY: &str = "/api/v1/groups";
/// On the server's `meshchat.groupserver` destination.
pub const CREATE: &str = "/api/v1/groups/create";

/// Every path above, for the check against the server's tables.
pub const ALL: &[&str] = &[
    INFO,
    JOIN,
    LEAVE,
    MEMBERS,
    JOIN_REQUESTS,
    APPROVE,
    REJECT,
    MESSAGES,
    SEND,
    DELETE,
    KICK,
    BAN,
    UNBAN,
    PERMISSIONS,
    RENAME,
    SETTINGS,
    NOTIFICATIONS,
    DIRECTORY,
    CREATE,
];
