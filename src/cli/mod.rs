//! The operator CLI: `serve`, and commands over groups, members, bans, join requests and identities.
//!
//! Every command prints a readable table, or one JSON document with `--json`. A change to a group
//! goes to the running server's group actor through the admin socket ([`crate::admin`]); with no
//! server running it goes to the store through [`GroupCore`], the code those actors run.

#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
mod ui;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::admin::Sent;
use crate::config::Config;
use crate::domain::Rights;
use crate::group::{Caller, CreateGroup, GroupCore, GroupError, Op, Settings};
use crate::store::{Group, GroupPatch, Store, StoreError};
use crate::wire::identity::parse_hash;

#[derive(Parser, Debug)]
#[command(name = "meshgroup", version, about = "Group chats for Reticulum and LXMF, many groups per server")]
pub struct Cli {
    /// Configuration file (default: config/meshgroup.toml if present).
    #[arg(long, global = true, env = "MESHGROUP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The outcome of reading the command line.
pub enum Parsed {
    /// Run this command.
    Run(Cli),
    /// Help or version was printed, or the arguments were refused (and said so): exit with this.
    Exit(i32),
}

/// Reads the command line. Help and version go to stdout as clap writes them; an argument error is
/// one line in the form of every other error (`meshgroup: …`, or a JSON object with `--json`),
/// with exit code 2.
pub fn parse_args<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::error::ErrorKind;
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let json = args.iter().any(|a| a == "--json");
    match Cli::try_parse_from(&args) {
        Ok(cli) => Parsed::Run(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            Parsed::Exit(0)
        }
        // `meshgroup` alone, or a command group without its subcommand: the help says what to type.
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand && !json => {
            let _ = e.print();
            Parsed::Exit(2)
        }
        Err(e) => {
            let message = match e.kind() {
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "a subcommand is required".to_owned(),
                // clap puts what is missing (or a tip) on the lines after the first: keep them, on one line.
                _ => {
                    let rendered = e.render().to_string();
                    let lines: Vec<&str> = rendered.lines().take_while(|l| !l.starts_with("Usage:")).map(str::trim).filter(|l| !l.is_empty()).collect();
                    if lines.is_empty() { "invalid arguments".to_owned() } else { lines.join(" ").trim_start_matches("error: ").to_owned() }
                }
            };
            report_error(json, &format!("{message} (see --help)"), 2);
            Parsed::Exit(2)
        }
    }
}

/// Prints an error on stderr: one line `meshgroup: …`, or with `--json` a JSON object
/// `{"error": …, "code": N}`, so scripts can parse both outcomes.
pub fn report_error(json: bool, message: &str, code: i32) {
    if json {
        eprintln!("{}", serde_json::json!({ "error": message, "code": code }));
    } else {
        eprintln!("meshgroup: {message}");
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Create, list, show, update and delete hosted groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage the members of a group.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Manage the bans of a group.
    #[command(subcommand)]
    Ban(BanCmd),
    /// Decide on requests to join private groups.
    #[command(subcommand, name = "join-requests")]
    JoinRequests(JoinCmd),
    /// Move a group's identity in and out (Reticulum 64-byte identity files).
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// The member's side: join groups, read and post, watch, moderate (see the README).
    Client(Box<client::ClientArgs>),
    /// Measure server-side work on throw-away stores (see docs/benchmarks.md).
    #[command(subcommand)]
    #[cfg(feature = "bench")]
    Bench(bench::BenchCmd),
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Create a public demo group on first start if the server hosts no group yet.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a group with a fresh Reticulum identity; prints its hashes.
    Create(CreateArgs),
    /// List the hosted groups with their members and hashes.
    List,
    /// Show one group's settings, hashes and `lxma://` contact link.
    Show {
        group: String,
        /// Also draw the contact link as a QR code, for Sideband, Columba or MeshChatX to scan.
        #[arg(long)]
        qr: bool,
    },
    /// Change a group's names, visibility, stamp costs or listing.
    Update(UpdateArgs),
    /// Delete a group and everything in it.
    Delete { group: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub private: bool,
    /// The real name of a private group, shown only to members.
    #[arg(long)]
    pub private_name: Option<String>,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=254))]
    pub join_stamp_cost: u32,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=254))]
    pub post_stamp_cost: u32,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub group: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Empty clears the private name.
    #[arg(long)]
    pub private_name: Option<String>,
    #[arg(long, conflicts_with = "public")]
    pub private: bool,
    #[arg(long)]
    pub public: bool,
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=254))]
    pub join_stamp_cost: Option<u32>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=254))]
    pub post_stamp_cost: Option<u32>,
    /// Whether non-members may read a public group's history.
    #[arg(long)]
    pub history_public: Option<bool>,
    /// Whether a private group is listed (as "Private Group") in the server directory.
    #[arg(long)]
    pub listed: Option<bool>,
    /// Most bytes of attachments one post may carry (images, files and audio together).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub attachment_max_bytes: Option<u32>,
    /// Attachment kinds allowed: a list of image, file, audio, or none.
    #[arg(long, value_parser = parse_kinds)]
    pub attachment_kinds: Option<u32>,
    /// Take the group back from its founder: the operator alone holds it again.
    #[arg(long)]
    pub clear_founder: bool,
}

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// List a group's members with their rights.
    List { group: String },
    /// Add a member directly (no request, no stamp).
    Add {
        group: String,
        identity: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Rights to delegate, e.g. `kick,ban` or `all`.
        #[arg(long, default_value = "none")]
        rights: String,
    },
    /// Remove a member (they may join again; a ban keeps them out).
    Remove { group: String, identity: String },
    /// Replace a member's delegated rights (`approve,kick,ban,delete,rename,settings,permissions`, `all`, `none`).
    SetPermissions { group: String, identity: String, rights: String },
}

#[derive(Subcommand, Debug)]
pub enum BanCmd {
    /// Ban an identity from a group, with a reason.
    Add {
        group: String,
        identity: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a ban.
    Remove { group: String, identity: String },
    /// List a group's bans.
    List { group: String },
}

#[derive(Subcommand, Debug)]
pub enum JoinCmd {
    /// List a private group's pending join requests.
    List { group: String },
    /// Let a requester in.
    Approve { group: String, identity: String },
    /// Turn a request down (the requester is told).
    Reject { group: String, identity: String },
}

#[derive(Subcommand, Debug)]
pub enum IdentityCmd {
    /// Write the group's 64-byte Reticulum identity file (mode 0600).
    Export {
        group: String,
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file (a group key is not overwritten by accident).
        #[arg(long)]
        force: bool,
    },
    /// Host a group under an existing identity file.
    Import {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        create: CreateArgs,
    },
}

/// A CLI failure: bad input (exit 2) or a failure of the machine (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Failure(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Input(_) => 2,
            CliError::Failure(_) => 1,
        }
    }
}

impl From<GroupError> for CliError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::Store(s) => CliError::Failure(s.to_string()),
            other => CliError::Input(other.to_string()),
        }
    }
}

impl From<crate::admin::AdminError> for CliError {
    fn from(e: crate::admin::AdminError) -> Self {
        match e {
            crate::admin::AdminError::Refused(m) => CliError::Input(m),
            other => CliError::Failure(other.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::from(GroupError::from(e))
    }
}

/// A command's result, printable as a table or as JSON.
pub struct Output {
    pub json: Value,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Output {
    fn message(json: Value, text: String) -> Self {
        Output { json, headers: vec![], rows: vec![vec![text]] }
    }

    pub fn render(&self, as_json: bool) -> String {
        if as_json {
            return self.json.to_string();
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i >= widths.len() {
                    widths.push(0);
                }
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line =
            |cells: Vec<String>| cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect::<Vec<_>>().join("  ").trim_end().to_owned();
        let mut out = Vec::new();
        if !self.headers.is_empty() {
            out.push(line(self.headers.iter().map(|h| h.to_uppercase()).collect()));
        }
        out.extend(self.rows.iter().map(|r| line(r.clone())));
        out.join("\n")
    }
}

/// Runs one non-`serve` command against the store.
pub async fn run_command(cfg: &Config, cmd: Command, json: bool) -> Result<Output, CliError> {
    // Benches build their own throw-away stores and must never touch the configured one; the
    // client has its own data dir and cache.
    let cmd = match cmd {
        #[cfg(feature = "bench")]
        Command::Bench(b) => return bench::run(b).await,
        Command::Client(c) => return client::run(*c, json).await,
        other => other,
    };
    let store = Store::open(&cfg.database_url()).await.map_err(|e| CliError::Failure(e.to_string()))?;
    let ctx = Ctx { store, socket: cfg.admin_socket() };
    match cmd {
        Command::Serve(_) | Command::Client(_) => Err(CliError::Input("not a store command".into())),
        Command::Group(c) => group_cmd(&ctx, c).await,
        Command::Member(c) => member_cmd(&ctx, c).await,
        Command::Ban(c) => ban_cmd(&ctx, c).await,
        Command::JoinRequests(c) => join_cmd(&ctx, c).await,
        Command::Identity(c) => identity_cmd(&ctx.store, c).await,
        #[cfg(feature = "bench")]
        Command::Bench(_) => Err(CliError::Input("bench is not a store command".into())),
    }
}

/// Resolves GROUP: a numeric id, or any of the group's three hashes.
pub async fn find_group(store: &Store, key: &str) -> Result<Group, CliError> {
    let not_found = || CliError::Input(format!("no group {key}"));
    if let Ok(id) = key.parse::<i64>() {
        return store.group_by_id(id).await.map_err(|_| not_found());
    }
    let hash = parse_hash(key).ok_or_else(|| CliError::Input(format!("malformed group id or hash: {key}")))?;
    store.group_by_hash(&hex::encode(hash)).await.map_err(|_| not_found())
}

fn identity_arg(s: &str) -> Result<String, CliError> {
    parse_hash(s).map(hex::encode).ok_or_else(|| CliError::Input(format!("malformed identity hash: {s}")))
}

/// `--attachment-kinds image,file,audio` (or `none`) as policy bits.
fn parse_kinds(s: &str) -> Result<u32, String> {
    use crate::wire::lxmf::{KIND_AUDIO, KIND_FILE, KIND_IMAGE};
    s.split(',').map(str::trim).filter(|w| !w.is_empty()).try_fold(0, |bits, w| match w {
        "image" | "images" => Ok(bits | KIND_IMAGE),
        "file" | "files" => Ok(bits | KIND_FILE),
        "audio" => Ok(bits | KIND_AUDIO),
        "none" => Ok(bits),
        other => Err(format!("unknown attachment kind {other:?} (image, file, audio, none)")),
    })
}

fn rights_arg(s: &str) -> Result<Rights, CliError> {
    Rights::parse_list(s).map_err(CliError::Input)
}

async fn core(store: &Store, key: &str) -> Result<GroupCore, CliError> {
    Ok(GroupCore::load(store.clone(), find_group(store, key).await?).await?)
}

/// Where a group command works: the store, and the admin socket of a server that may run on it.
struct Ctx {
    store: Store,
    socket: PathBuf,
}

impl Ctx {
    /// Applies an operation as the owner: through the running server's group actor when one
    /// listens on the admin socket, else to the store through the same [`GroupCore`] (a server
    /// started later reads the store and schedules the notices left unsent).
    async fn owner_op(&self, group: &str, op: Op) -> Result<Group, CliError> {
        let g = find_group(&self.store, group).await?;
        if let Sent::NoServer(op) = crate::admin::send(&self.socket, g.id, op).await? {
            let deleting = matches!(op, Op::DeleteGroup);
            GroupCore::load(self.store.clone(), g.clone()).await?.apply(&Caller::Owner, op).await?;
            if !deleting {
                // A server that could not bind the socket still notices a newer `updated_at`.
                self.store.update_group(g.id, GroupPatch::default()).await?;
            }
        }
        Ok(g)
    }
}

pub fn group_json(g: &Group, members: u64) -> Value {
    json!({
        "id": g.id,
        "identity_hash": g.identity_hash,
        "group_destination_hash": g.group_dest_hash,
        "lxmf_destination_hash": g.lxmf_dest_hash,
        "name": g.public_name,
        "private_name": g.private_name,
        "visibility": g.visibility,
        "join_stamp_cost": g.join_stamp_cost,
        "post_stamp_cost": g.post_stamp_cost,
        "history_public": g.history_public,
        "attachment_max_bytes": g.attachment_max_bytes,
        "attachment_kinds": g.attachment_kinds,
        "listed": g.listed,
        "founder": g.founder_identity_hash,
        "members": members,
        "created_at": g.created_at,
        "updated_at": g.updated_at,
    })
}

/// `text` as a QR code (error correction M, 4-module quiet zone), two module rows per line in
/// Unicode half blocks. Light modules are drawn and dark ones left blank, as `qrencode -t UTF8`
/// does, so the code reads right on the usual dark-background terminal.
pub fn qr_lines(text: &str) -> Option<Vec<String>> {
    let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium).ok()?;
    const QUIET: i32 = 4;
    // Outside the symbol `get_module` is false: light, which draws the quiet zone.
    let light = |x: i32, y: i32| !qr.get_module(x, y);
    let span = -QUIET..qr.size() + QUIET;
    Some(
        span.clone()
            .step_by(2)
            .map(|y| {
                span.clone()
                    .map(|x| match (light(x, y), light(x, y + 1)) {
                        (true, true) => '█',
                        (true, false) => '▀',
                        (false, true) => '▄',
                        (false, false) => ' ',
                    })
                    .collect()
            })
            .collect(),
    )
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

async fn group_cmd(ctx: &Ctx, c: GroupCmd) -> Result<Output, CliError> {
    let store = &ctx.store;
    match c {
        GroupCmd::Create(a) => {
            let g = crate::group::create_group(store, create_args(a, None)).await?;
            // A running server starts the group before this returns, so the next command of a
            // provisioning script (member add, delete) finds it running.
            crate::admin::start(&ctx.socket, g.id).await?;
            Ok(group_created(&g))
        }
        GroupCmd::List => {
            let groups = store.list_groups().await?;
            let mut json = Vec::new();
            let mut rows = Vec::new();
            for g in &groups {
                let n = store.count_members(g.id).await?;
                json.push(group_json(g, n));
                rows.push(vec![
                    g.id.to_string(),
                    g.public_name.clone(),
                    g.visibility.clone(),
                    n.to_string(),
                    g.group_dest_hash.clone(),
                    g.lxmf_dest_hash.clone(),
                    g.founder_identity_hash.clone().unwrap_or_else(|| "-".into()),
                    ts(g.created_at),
                ]);
            }
            Ok(Output {
                json: Value::Array(json),
                headers: vec!["id", "name", "visibility", "members", "meshchat.group", "lxmf.delivery", "founder", "created"],
                rows,
            })
        }
        GroupCmd::Show { group, qr } => {
            let g = find_group(store, &group).await?;
            let n = store.count_members(g.id).await?;
            let link = crate::group::contact_link(&g).ok_or_else(|| CliError::Failure(format!("group {} has no valid identity key", g.id)))?;
            let mut json = group_json(&g, n);
            json["contact_link"] = Value::from(link.clone());
            // A running server may ask for more now (the adaptive cost under a stamp flood).
            if let Ok(Some(c)) = crate::admin::current_costs(&ctx.socket, g.id).await {
                json["current_join_stamp_cost"] = c.join_stamp_cost.into();
                json["current_post_stamp_cost"] = c.post_stamp_cost.into();
            }
            let mut rows: Vec<Vec<String>> =
                json.as_object().map(|o| o.iter().map(|(k, v)| vec![k.clone(), v.to_string().trim_matches('"').to_owned()]).collect()).unwrap_or_default();
            if qr {
                let lines = qr_lines(&link).ok_or_else(|| CliError::Failure("the contact link does not fit a QR code".into()))?;
                rows.extend(lines.into_iter().enumerate().map(|(i, l)| vec![if i == 0 { "qr".to_owned() } else { String::new() }, l]));
            }
            Ok(Output { json, headers: vec!["field", "value"], rows })
        }
        GroupCmd::Update(a) => {
            if a.name.is_some() || a.private_name.is_some() {
                ctx.owner_op(&a.group, Op::Rename { public_name: a.name, private_name: a.private_name }).await?;
            }
            let visibility = match (a.private, a.public) {
                (true, _) => Some(crate::domain::Visibility::Private),
                (_, true) => Some(crate::domain::Visibility::Public),
                _ => None,
            };
            let settings = Settings {
                visibility,
                join_stamp_cost: a.join_stamp_cost,
                post_stamp_cost: a.post_stamp_cost,
                history_public: a.history_public,
                listed: a.listed,
                attachment_max_bytes: a.attachment_max_bytes,
                attachment_kinds: a.attachment_kinds,
            };
            if !settings.is_empty() {
                ctx.owner_op(&a.group, Op::UpdateSettings(settings)).await?;
            }
            if a.clear_founder {
                ctx.owner_op(&a.group, Op::ClearFounder).await?;
            }
            let g = find_group(store, &a.group).await?;
            let n = store.count_members(g.id).await?;
            Ok(Output::message(group_json(&g, n), format!("updated group {}", g.id)))
        }
        GroupCmd::Delete { group } => {
            let g = ctx.owner_op(&group, Op::DeleteGroup).await?;
            Ok(Output::message(json!({"deleted": g.id}), format!("deleted group {} ({})", g.id, g.public_name)))
        }
    }
}

fn create_args(a: CreateArgs, key: Option<Vec<u8>>) -> CreateGroup {
    CreateGroup {
        name: a.name,
        private: a.private,
        private_name: a.private_name,
        join_stamp_cost: a.join_stamp_cost,
        post_stamp_cost: a.post_stamp_cost,
        founder: None,
        private_key: key,
    }
}

fn group_created(g: &Group) -> Output {
    Output {
        json: group_json(g, 0),
        headers: vec!["id", "name", "identity", "meshchat.group", "lxmf.delivery"],
        rows: vec![vec![
            g.id.to_string(),
            g.public_name.clone(),
            format!("<{}>", g.identity_hash),
            format!("<{}>", g.group_dest_hash),
            format!("<{}>", g.lxmf_dest_hash),
        ]],
    }
}

async fn member_cmd(ctx: &Ctx, c: MemberCmd) -> Result<Output, CliError> {
    let owner = Caller::Owner;
    match c {
        MemberCmd::List { group } => {
            let core = core(&ctx.store, &group).await?;
            let members = core.members(&owner, 0, u64::MAX >> 1).await?;
            let json = members
                .iter()
                .map(|m| json!({"identity_hash": m.identity_hash, "display_name": m.display_name, "rights": Rights(m.permissions).names(), "notify_mode": m.notify_mode, "created_at": m.created_at, "last_seen": m.last_seen}))
                .collect();
            let rows = members
                .iter()
                .map(|m| {
                    vec![m.identity_hash.clone(), m.display_name.clone(), Rights(m.permissions).names().join(","), m.notify_mode.clone(), ts(m.created_at)]
                })
                .collect();
            Ok(Output { json: Value::Array(json), headers: vec!["identity", "name", "rights", "notify", "joined"], rows })
        }
        MemberCmd::Add { group, identity, name, rights } => {
            let (identity, rights) = (identity_arg(&identity)?, rights_arg(&rights)?);
            ctx.owner_op(&group, Op::AddMember { identity: identity.clone(), display_name: name, rights }).await?;
            Ok(Output::message(json!({"added": identity}), format!("added {identity}")))
        }
        MemberCmd::Remove { group, identity } => {
            let identity = identity_arg(&identity)?;
            ctx.owner_op(&group, Op::Kick { identity: identity.clone() }).await?;
            Ok(Output::message(json!({"removed": identity}), format!("removed {identity}")))
        }
        MemberCmd::SetPermissions { group, identity, rights } => {
            let (identity, rights) = (identity_arg(&identity)?, rights_arg(&rights)?);
            ctx.owner_op(&group, Op::SetPermissions { identity: identity.clone(), rights }).await?;
            Ok(Output::message(json!({"identity": identity, "rights": rights.names()}), format!("{identity}: {}", rights.names().join(","))))
        }
    }
}

async fn ban_cmd(ctx: &Ctx, c: BanCmd) -> Result<Output, CliError> {
    let owner = Caller::Owner;
    match c {
        BanCmd::Add { group, identity, reason } => {
            let identity = identity_arg(&identity)?;
            ctx.owner_op(&group, Op::Ban { identity: identity.clone(), reason: reason.clone() }).await?;
            Ok(Output::message(json!({"banned": identity, "reason": reason}), format!("banned {identity}")))
        }
        BanCmd::Remove { group, identity } => {
            let identity = identity_arg(&identity)?;
            ctx.owner_op(&group, Op::Unban { identity: identity.clone() }).await?;
            Ok(Output::message(json!({"unbanned": identity}), format!("unbanned {identity}")))
        }
        BanCmd::List { group } => {
            let core = core(&ctx.store, &group).await?;
            let bans = core.bans(&owner).await?;
            let json = bans
                .iter()
                .map(|b| json!({"identity_hash": b.identity_hash, "reason": b.reason, "banned_by": b.banned_by, "created_at": b.created_at}))
                .collect();
            let rows = bans.iter().map(|b| vec![b.identity_hash.clone(), b.reason.clone(), b.banned_by.clone(), ts(b.created_at)]).collect();
            Ok(Output { json: Value::Array(json), headers: vec!["identity", "reason", "by", "since"], rows })
        }
    }
}

async fn join_cmd(ctx: &Ctx, c: JoinCmd) -> Result<Output, CliError> {
    match c {
        JoinCmd::List { group } => {
            let core = core(&ctx.store, &group).await?;
            let owner = Caller::Owner;
            let reqs = core.join_requests(&owner).await?;
            let json = reqs
                .iter()
                .map(|r| json!({"identity_hash": r.identity_hash, "display_name": r.display_name, "note": r.note, "created_at": r.created_at}))
                .collect();
            let rows = reqs.iter().map(|r| vec![r.identity_hash.clone(), r.display_name.clone(), r.note.clone(), ts(r.created_at)]).collect();
            Ok(Output { json: Value::Array(json), headers: vec!["identity", "name", "note", "requested"], rows })
        }
        JoinCmd::Approve { group, identity } => {
            let identity = identity_arg(&identity)?;
            ctx.owner_op(&group, Op::Approve { identity: identity.clone() }).await?;
            Ok(Output::message(json!({"approved": identity}), format!("approved {identity}")))
        }
        JoinCmd::Reject { group, identity } => {
            let identity = identity_arg(&identity)?;
            ctx.owner_op(&group, Op::Reject { identity: identity.clone() }).await?;
            Ok(Output::message(json!({"rejected": identity}), format!("rejected {identity}")))
        }
    }
}

async fn identity_cmd(store: &Store, c: IdentityCmd) -> Result<Output, CliError> {
    match c {
        IdentityCmd::Export { group, out, force } => {
            let g = find_group(store, &group).await?;
            if out.exists() && !force {
                return Err(CliError::Input(format!("{} exists; pass --force to replace it", out.display())));
            }
            write_private_file(&out, &g.identity_private_key).map_err(|e| CliError::Failure(format!("cannot write {}: {e}", out.display())))?;
            Ok(Output::message(json!({"exported": g.identity_hash, "file": out}), format!("wrote {}", out.display())))
        }
        IdentityCmd::Import { file, create } => {
            let key = std::fs::read(&file).map_err(|e| CliError::Input(format!("cannot read {}: {e}", file.display())))?;
            let g = crate::group::create_group(store, create_args(create, Some(key))).await?;
            Ok(group_created(&g))
        }
    }
}

/// Identity files hold a private key: readable by the owner only.
fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}
