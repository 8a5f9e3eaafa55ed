//! Layered configuration: struct defaults < a TOML file < `MESHGROUP_` environment variables.
//!
//! `config/default.toml` documents every key; a test keeps it in step with these structs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Top-level keys of [`Config`], the only ones taken from the environment.
const SECTIONS: &[&str] =
    &["data_dir", "database", "metrics", "reticulum", "log", "limits", "fanout", "notices", "hosting", "propagation", "shutdown", "stamps"];

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/meshgroup.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the server keeps its SQLite database and admin socket.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub metrics: MetricsConfig,
    pub reticulum: ReticulumConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub fanout: FanoutConfig,
    pub notices: NoticesConfig,
    pub hosting: HostingConfig,
    pub propagation: PropagationConfig,
    pub shutdown: ShutdownConfig,

    pub stamps: StampsConfig,
}

/// Defences of the stamp pool against brute force and floods, and the adaptive stamp cost.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StampsConfig {
    /// Failed stamps (too weak, or a used challenge) one identity may send within
    /// `failure_window_secs`; the next one starts its cooldown.
    pub max_failures: u32,
    pub failure_window_secs: u64,
    /// Seconds an identity's stamps are refused, unchecked, after `max_failures`.
    pub cooldown_secs: u64,
    /// Identities (and failed challenges) remembered at most; the oldest entry goes first.
    pub tracked_identities: usize,
    /// Checks one identity may have in the pool at once.
    pub pool_per_identity: usize,
    /// Share of `limits.stamp_pool_capacity` one group may hold (0..=1).
    pub pool_group_share: f64,
    /// Share of the pool that identities with a recent failure may hold together (0..=1).
    pub pool_failed_share: f64,
    /// Milliseconds an identity without recent failures waits for a slot before `rate_limited`.
    pub pool_wait_ms: u64,
    /// The adaptive cost: a group's join and post costs rise by one bit per spike, within
    /// `[adaptive_min_cost, adaptive_max_cost]`; 0 as the maximum turns it off.
    pub adaptive_min_cost: u32,
    pub adaptive_max_cost: u32,
    /// Stamp refusals plus join attempts per group and minute that count as a spike.
    pub adaptive_spike_per_min: u32,
    /// Quiet seconds (no spike) after which a raised cost drops by one bit.
    pub adaptive_decay_secs: u64,
}

impl Default for StampsConfig {
    fn default() -> Self {
        StampsConfig {
            max_failures: 3,
            failure_window_secs: 600,
            cooldown_secs: 600,
            tracked_identities: 65536,
            pool_per_identity: 2,
            pool_group_share: 0.5,
            pool_failed_share: 0.25,
            pool_wait_ms: 2000,
            adaptive_min_cost: 8,
            adaptive_max_cost: 16,
            adaptive_spike_per_min: 120,
            adaptive_decay_secs: 600,
        }
    }
}

/// What members are told of group events, and how often.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NoticesConfig {
    /// Seconds between two membership digests of one group (to members who opted in) and two
    /// join-request digests (to approvers). Joins and leaves are never pushed one by one.
    pub digest_interval_secs: u64,
}

impl Default for NoticesConfig {
    fn default() -> Self {
        NoticesConfig { digest_interval_secs: 3600 }
    }
}

/// The propagation node used for unreachable members and for collecting posts left for groups.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationConfig {
    /// The node's `lxmf.propagation` destination hash; empty picks the most recently heard one.
    pub node: String,
    /// Seconds between two inbox syncs.
    pub sync_interval_secs: u64,
    /// Groups synced per round; the rest wait for the next round (the node and the air are shared).
    pub groups_per_sync: usize,
}

impl Default for PropagationConfig {
    fn default() -> Self {
        PropagationConfig { node: String::new(), sync_interval_secs: 600, groups_per_sync: 20 }
    }
}

/// Who may create groups through the server destination (`/api/v1/groups/create`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CreationPolicy {
    Open,
    Closed,
    AllowList,
}

/// The hosting service: the server destination, its directory and self-service creation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostingConfig {
    /// The server's name in its `meshchat.groupserver` announce.
    pub name: String,
    /// Seconds between two announces of the server destination.
    pub announce_interval_secs: u64,
    pub creation_policy: CreationPolicy,
    /// Identity hashes (32 hex characters) that may create groups under `allow_list`.
    pub allow_list: Vec<String>,
    /// Groups one identity may have founded (and still hold); 0 = no limit.
    pub max_groups_per_identity: u64,
    /// Groups on the server, however created, beyond which creation is refused; 0 = no limit.
    pub max_groups: u64,
    /// Stamp cost (LXMF bits) to create a group; 0 = none.
    pub create_stamp_cost: u32,
    /// Creations per identity in any hour; 0 = no limit.
    pub create_rate_per_hour: u32,
}

impl Default for HostingConfig {
    fn default() -> Self {
        HostingConfig {
            name: "meshgroup".into(),
            announce_interval_secs: 3 * 3600,
            creation_policy: CreationPolicy::Open,
            allow_list: Vec::new(),
            max_groups_per_identity: 5,
            max_groups: 10_000,
            create_stamp_cost: 8,
            create_rate_per_hour: 3,
        }
    }
}

/// How the fan-out delivers: pacing, retries, expiry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Messages per second handed to the interfaces; 0 means unthrottled (TCP-only setups).
    /// For LoRa, about 0.5 to 2.
    pub rate_per_sec: f64,
    /// Messages that may go at once after a quiet spell.
    pub burst: f64,
    /// How long to wait for a member's delivery proof before counting the attempt failed.
    pub proof_timeout_secs: u64,
    /// Longest wait between two attempts (the backoff doubles up to this, with jitter).
    pub retry_cap_secs: u64,
    /// After this many failed attempts a row goes to the propagation node, if one is configured.
    pub max_attempts: i32,
    /// Rows still undelivered after this long expire (and are counted).
    pub expire_after_secs: u64,
    /// Rows fetched per scheduling round.
    pub batch: u64,
    /// Path requests per second, server-wide: a reference node drops them above 3/s.
    pub path_requests_per_sec: f64,
    /// Copies sent as packets whose delivery proof has not come yet, at most (each counted for
    /// 2 s at most); 0 turns the window off. A reference node queues 1,024 inbound packets.
    pub window: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH?mode=rwc` or `postgres://…`; empty means `DATA_DIR/meshgroup.db`.
    pub url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint; empty turns it off.
    pub listen: String,
    /// Label group metrics by group (small deployments only).
    pub per_group: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReticulumConfig {
    pub interfaces: Vec<InterfaceConfig>,
    /// Seconds between two announces of the same group.
    pub announce_interval_secs: u64,
    /// Random extra delay, as a fraction of the interval, so groups don't announce in step.
    pub announce_jitter: f64,
    /// Announces per second across all groups (the global budget).
    pub announce_budget_per_sec: f64,
}

/// One Reticulum interface of the node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InterfaceConfig {
    /// Peers connect to us (Python `TCPClientInterface` compatible).
    TcpServer { listen: String },
    /// We connect to an rnsd or hub (Python `TCPServerInterface` compatible).
    TcpClient { target: String },
    /// Attach to an operator's running rnsd as a shared-instance client.
    SharedInstance {
        #[serde(default = "default_instance_name")]
        instance_name: String,
        /// `unix` (abstract socket, the default) or `tcp`.
        #[serde(default = "default_shared_type")]
        shared_instance_type: String,
        #[serde(default = "default_shared_port")]
        port: u16,
    },
}

fn default_instance_name() -> String {
    "default".into()
}
fn default_shared_type() -> String {
    "unix".into()
}
fn default_shared_port() -> u16 {
    37428
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `meshgroup=debug,info`.
    pub level: String,
    /// Level for the Reticulum crate's own targets, which are chatty at info.
    pub transport_level: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted on the link API, in bytes.
    pub max_request_bytes: usize,
    /// Default and maximum page size of history and member lists.
    pub default_page: u32,
    pub max_page: u32,
    /// Stamp validations that may run or wait at once; beyond it requests get `rate_limited`.
    pub stamp_pool_capacity: usize,
    /// Link API requests being handled at once, over all links; beyond it they get `rate_limited`.
    pub max_inflight_requests: usize,
    /// Requests one link may have outstanding; beyond it that link's requests get `rate_limited`.
    pub max_requests_per_link: usize,
    /// Inbound LXMF messages being handled at once; beyond it opportunistic ones are dropped
    /// unproven (the sender retries) and direct ones wait.
    pub max_inflight_packets: usize,
    /// Least time between a link request's arrival and its answer, less the request's own travel
    /// time; 0 turns it off. RNS 1.5.7 clients register a request only after sending it, and drop
    /// an answer that comes back sooner (see docs/benchmarks.md).
    pub response_floor_ms: u64,
    /// Direct posts the journal holds at most while the database is away (each is one small file).
    pub journal_max_entries: usize,
    /// Inbound links kept at once, in total, per interface (one TCP client is one interface) and
    /// per identity (counted once a link identifies); a link beyond a cap is torn down.
    pub max_links: usize,
    pub max_links_per_interface: usize,
    pub max_links_per_identity: usize,
    /// Inbound Resources (large requests, direct LXMF) in progress at once, in total and per
    /// identity; one link carries one at a time. A link that starts one beyond a cap is torn down.
    pub max_inbound_transfers: usize,
    pub max_inbound_transfers_per_identity: usize,
    /// Largest advertised size, decompressed, of a split inbound Resource; its link is torn down
    /// after the first segment of a bigger one.
    pub max_transfer_bytes: usize,
    /// Seconds a link may carry nothing (no request, packet or transfer) before it is closed;
    /// 0 = never. The transport alone keeps a vanished peer's link for 720 s.
    pub link_idle_secs: u64,
}

/// How `serve` stops on SIGTERM or SIGINT.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds the server waits for work in progress (requests, posts being stored and proven,
    /// deliveries waiting for proofs) before it exits.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace_secs: 10 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            database: DatabaseConfig::default(),
            metrics: MetricsConfig::default(),
            reticulum: ReticulumConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            fanout: FanoutConfig::default(),
            notices: NoticesConfig::default(),
            hosting: HostingConfig::default(),
            propagation: PropagationConfig::default(),
            shutdown: ShutdownConfig::default(),

            stamps: StampsConfig::default(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".into(), per_group: false }
    }
}

impl Default for ReticulumConfig {
    fn default() -> Self {
        ReticulumConfig {
            interfaces: vec![InterfaceConfig::TcpServer { listen: "127.0.0.1:4242".into() }],
            announce_interval_secs: 3 * 3600,
            announce_jitter: 0.1,
            announce_budget_per_sec: 1.0,
        }
    }
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            rate_per_sec: 0.0,
            burst: 20.0,
            proof_timeout_secs: 30,
            retry_cap_secs: 1800,
            max_attempts: 5,
            expire_after_secs: 7 * 24 * 3600,
            batch: 256,
            path_requests_per_sec: 1.5,
            window: 256,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), transport_level: "warn".into() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 64 * 1024,
            default_page: 20,
            max_page: 200,
            stamp_pool_capacity: 64,
            max_inflight_requests: 256,
            max_requests_per_link: 8,
            max_inflight_packets: 512,
            response_floor_ms: 20,
            journal_max_entries: 100_000,
            max_links: 4096,
            max_links_per_interface: 1024,
            max_links_per_identity: 32,
            max_inbound_transfers: 8,
            max_inbound_transfers_per_identity: 2,
            max_transfer_bytes: 4 * 1024 * 1024,
            link_idle_secs: 300,
        }
    }
}

impl Config {
    /// Loads defaults, then the file (`path`, or `config/meshgroup.toml` if present), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_owned())),
            Some(p) => fig = fig.merge(Toml::file(p)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => fig = fig.merge(Toml::file(DEFAULT_CONFIG_PATH)),
            None => {}
        }
        // Only keys under a known section are configuration; other MESHGROUP_ variables
        // (such as the test database URL) belong to other tools.
        let env = Env::prefixed("MESHGROUP_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                SECTIONS.iter().any(|s| k == *s || k.starts_with(&format!("{s}__")))
            })
            .split("__");
        fig = fig.merge(env);
        let cfg: Config = fig.extract().map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.reticulum.announce_budget_per_sec.is_nan() || self.reticulum.announce_budget_per_sec <= 0.0 {
            return Err(ConfigError::Invalid("reticulum.announce_budget_per_sec must be > 0".into()));
        }
        if self.fanout.path_requests_per_sec.is_nan() || self.fanout.path_requests_per_sec <= 0.0 {
            return Err(ConfigError::Invalid("fanout.path_requests_per_sec must be > 0".into()));
        }
        if !(0.0..=1.0).contains(&self.reticulum.announce_jitter) {
            return Err(ConfigError::Invalid("reticulum.announce_jitter must be within 0..=1".into()));
        }
        if !crate::domain::valid_stamp_cost(self.hosting.create_stamp_cost.into()) {
            return Err(ConfigError::Invalid("hosting.create_stamp_cost must be within 0..=254".into()));
        }
        if let Some(bad) = self.hosting.allow_list.iter().find(|h| crate::wire::identity::parse_hash(h).is_none()) {
            return Err(ConfigError::Invalid(format!("hosting.allow_list: not an identity hash: {bad}")));
        }
        let st = &self.stamps;
        if !(0.0..=1.0).contains(&st.pool_group_share) || !(0.0..=1.0).contains(&st.pool_failed_share) {
            return Err(ConfigError::Invalid("stamps.pool_group_share and stamps.pool_failed_share must be within 0..=1".into()));
        }
        if st.adaptive_max_cost > 254 || (st.adaptive_max_cost > 0 && st.adaptive_min_cost > st.adaptive_max_cost) {
            return Err(ConfigError::Invalid("stamps: adaptive_min_cost <= adaptive_max_cost <= 254".into()));
        }
        if !self.metrics.listen.is_empty() {
            self.metrics_addr()?;
        }
        if !self.propagation.node.is_empty() && crate::wire::identity::parse_hash(&self.propagation.node).is_none() {
            return Err(ConfigError::Invalid(format!("propagation.node: not a destination hash: {}", self.propagation.node)));
        }
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() { format!("sqlite://{}?mode=rwc", self.data_dir.join("meshgroup.db").display()) } else { self.database.url.clone() }
    }

    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics.listen.is_empty() {
            return Ok(None);
        }
        self.metrics.listen.parse().map(Some).map_err(|_| ConfigError::Invalid(format!("metrics.listen: not an address: {}", self.metrics.listen)))
    }

    /// The admin socket through which CLI commands reach a running server.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/default.toml` must parse into exactly the defaults, and mention every key.
    #[test]
    fn default_toml_matches_struct() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
        let text = std::fs::read_to_string(path).expect("config/default.toml");
        let from_file: Config = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&text)).extract().expect("default.toml parses");
        assert_eq!(from_file, Config::default());
        let defaults = toml_keys(&serde_json::to_value(Config::default()).expect("json"), "");
        for key in defaults {
            let leaf = key.rsplit('.').next().unwrap_or(&key).to_owned();
            let documented = text.contains(&format!("{leaf} =")) || text.contains(&format!("[[{key}]]"));
            assert!(documented, "default.toml lacks {key}");
        }
    }

    fn toml_keys(v: &serde_json::Value, prefix: &str) -> Vec<String> {
        match v {
            serde_json::Value::Object(map) => map
                .iter()
                .flat_map(|(k, v)| {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    match v {
                        serde_json::Value::Object(_) => toml_keys(v, &p),
                        _ => vec![p],
                    }
                })
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("m.toml", "data_dir = \"/tmp/x\"\n[metrics]\nlisten = \"127.0.0.1:1\"\n")?;
            jail.set_env("MESHGROUP_METRICS__LISTEN", "127.0.0.1:2");
            let cfg = Config::load(Some(Path::new("m.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(cfg.metrics.listen, "127.0.0.1:2");
            Ok(())
        });
    }

    #[test]
    fn interfaces_parse() {
        let text = r#"
            [[reticulum.interfaces]]
            type = "tcp_client"
            target = "127.0.0.1:4965"
            [[reticulum.interfaces]]
            type = "shared_instance"
        "#;
        let cfg: Config = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)).extract().expect("parses");
        assert_eq!(cfg.reticulum.interfaces.len(), 2);
        assert!(matches!(&cfg.reticulum.interfaces[1], InterfaceConfig::SharedInstance { instance_name, .. } if instance_name == "default"));
    }
}
