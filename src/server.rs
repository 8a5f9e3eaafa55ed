//! `meshgroup serve`: opens the store, starts metrics, the node and the actors, and stops on a signal.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot create the demo group: {0}")]
    Demo(String),
    #[error("reticulum: {0}")]
    Node(#[from] crate::transport::NodeError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("hosting service: {0}")]
    Hosting(#[from] crate::api::hosting::HostingError),
}

/// The name of the group `serve --demo` creates on an empty server.
pub const DEMO_GROUP_NAME: &str = "meshgroup demo";

/// Runs the server until `shutdown` resolves.
pub async fn run<S>(cfg: Config, demo: bool, shutdown: S) -> Result<(), ServerError>
where
    S: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    prepare_data_dir(&cfg.data_dir)?;
    let store = Store::open(&cfg.database_url()).await?;
    tracing::info!(backend = store.backend(), "store open");
    let filled = store.backfill_lxmf_hashes(crate::wire::identity::lxmf_hash_of).await?;
    if filled > 0 {
        tracing::info!(filled, "known identities given their lxmf.delivery hash");
    }
    crate::metrics::set_per_group(cfg.metrics.per_group);
    if let Some(addr) = cfg.metrics_addr()? {
        crate::metrics::install(addr)?;
        tracing::info!(%addr, "metrics endpoint listening");
    }
    if demo && store.count_groups().await? == 0 {
        let g = crate::group::create_group(&store, crate::group::CreateGroup { name: DEMO_GROUP_NAME.into(), ..Default::default() })
            .await
            .map_err(|e| ServerError::Demo(e.to_string()))?;
        println!("demo group created: {:?} (identity <{}>)", g.public_name, g.identity_hash);
    }
    for g in store.list_groups().await? {
        tracing::info!(id = g.id, name = %g.public_name, group = %g.group_dest_hash, lxmf = %g.lxmf_dest_hash, "hosting group");
    }

    let life = crate::lifecycle::Lifecycle::new();
    let journal = Some(std::sync::Arc::new(crate::journal::Journal::open(&cfg.data_dir.join("journal"), cfg.limits.journal_max_entries)?));
    let mut node_cfg = crate::transport::node_config(&cfg)?;
    let interfaces = std::mem::take(&mut node_cfg.interfaces);
    let (node, events) = crate::transport::Node::start(node_cfg).await?;
    let registry = crate::actors::supervisor::Registry::default();
    let (interfaces_open_tx, interfaces_open_rx) = tokio::sync::oneshot::channel();
    let pn = crate::wire::identity::parse_hash(&cfg.propagation.node);
    let propagation = std::sync::Arc::new(crate::lxmf::propagation::Propagation::new(node.clone(), pn));
    let courier = std::sync::Arc::new(crate::lxmf::courier::Courier::new(node.clone(), store.clone(), propagation.clone(), cfg.fanout.path_requests_per_sec));
    let fanout = crate::actors::fanout::FanoutActor::start(store.clone(), courier.clone(), cfg.fanout.clone(), &life);
    let stamps = crate::stamps::StampPool::new(cfg.limits.stamp_pool_capacity, &cfg.stamps);
    let supervisor = crate::actors::supervisor::Supervisor::start(
        store.clone(),
        node.clone(),
        registry.clone(),
        fanout.clone(),
        &cfg,
        interfaces_open_rx,
        &life,
        stamps.clone(),
    )
    .await?;
    // The server destination too is registered before any interface opens.
    let hosting = crate::api::hosting::Hosting::start(&store, &node, cfg.hosting.clone()).await?;
    let services = std::sync::Arc::new(crate::api::services::Services {
        node,
        courier,
        propagation,
        registry,
        supervisor,
        fanout,
        stamps,
        store: store.clone(),
        limits: cfg.limits.clone(),
        journal,
        refusal_log: crate::api::services::LogBudget::new(20.0),
        side_writes: std::sync::Arc::new(tokio::sync::Semaphore::new(crate::api::services::SIDE_WRITES)),
        remembered: std::sync::Arc::default(),
        life: life.clone(),
    });
    let inbound = crate::api::lxmf::Inbound::new(services.clone(), cfg.limits.max_inflight_packets);
    // The router outlives the drain: proofs for the work in progress come through it. It stops
    // last; a run that died goes on with the same event queue (its links re-identify).
    let router_stop = tokio_util::sync::CancellationToken::new();
    let events = std::sync::Arc::new(tokio::sync::Mutex::new(events));
    let (s, i, h) = (services.clone(), inbound.clone(), hosting.clone());
    life.supervise_until("router", router_stop.clone(), move |stop| {
        let (s, i, h, events) = (s.clone(), i.clone(), h.clone(), events.clone());
        async move {
            let mut events = events.lock().await;
            tokio::select! {
                _ = crate::api::router::run(s, i, h, &mut events) => {}
                _ = stop.cancelled() => {}
            }
        }
    });
    let admin_socket = cfg.admin_socket();
    // Without the socket the CLI still works: it writes the store, and the server polls it.
    if let Err(err) = crate::admin::listen(&admin_socket, services.registry.clone(), services.supervisor.clone(), services.stamps.clone(), &life) {
        tracing::warn!(%err, "admin socket unavailable; CLI changes reach this server through the store");
        services.supervisor.do_send(crate::actors::supervisor::PollStore);
    }
    // Every destination is registered now; only then do peers get to ask for paths.
    services.node.open_interfaces(interfaces).await?;
    let _ = interfaces_open_tx.send(());
    for iface in &cfg.reticulum.interfaces {
        tracing::info!(?iface, "reticulum interface up");
    }
    println!("{}", first_run_block(&store.list_groups().await?, &cfg.reticulum.interfaces));
    quiet_stdout();
    let (node, st) = (services.node.clone(), store.clone());
    life.supervise("server_announcer", move |stop| hosting.clone().announce_every_interval(node.clone(), st.clone(), stop));
    let st = store.clone();
    life.supervise("sampler", move |stop| sample_gauges(st.clone(), started, stop));
    let i = inbound.clone();
    life.supervise("journal_replay", move |stop| replay_journal(i.clone(), stop));
    let s = services.clone();
    life.supervise("stamp_costs", move |stop| crate::api::router::announce_cost_changes(s.clone(), stop));
    let (s, i, pcfg) = (services.clone(), inbound.clone(), cfg.propagation.clone());
    life.supervise("propagation_sync", move |stop| sync_propagation(s.clone(), i.clone(), pcfg.clone(), stop));
    tracing::info!("meshgroup serving");
    shutdown.await;

    let grace = Duration::from_secs(cfg.shutdown.grace_secs);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: new work is refused, work in progress drains");
    let drained = life.shutdown(grace).await;
    if drained {
        tracing::info!("work in progress finished");
    } else {
        tracing::warn!(still_running = life.running(), "grace period over; unfinished deliveries stay in the outbox and resume at the next start");
    }
    router_stop.cancel();
    // Closing the pool here, inside the runtime, ends every connection in order.
    if tokio::time::timeout(Duration::from_secs(2), store.close()).await.is_err() {
        tracing::warn!("the database pool did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The data directory holds the journal, the ratchets and the admin socket (and, on SQLite, the
/// group keys): only the server's user may enter it, whichever backend, new or not.
fn prepare_data_dir(dir: &std::path::Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServerError::DataDir { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Replays the post journal: everything in it at start-up (posts proven before a crash or during
/// an outage), then every few seconds what a database outage left there.
async fn replay_journal(inbound: std::sync::Arc<crate::api::lxmf::Inbound>, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(5);
    loop {
        // Entries still with the task that wrote them are skipped by the replay itself.
        let (settled, left) = inbound.replay_journal(crate::store::now_ms()).await;
        if settled > 0 || left > 0 {
            tracing::info!(settled, left, "post journal replayed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Collects posts that members left for the groups on the propagation node, a few groups per
/// round so one server's sync does not hog a shared node or a slow link.
async fn sync_propagation(
    s: std::sync::Arc<crate::api::services::Services>,
    inbound: std::sync::Arc<crate::api::lxmf::Inbound>,
    cfg: crate::config::PropagationConfig,
    stop: CancellationToken,
) {
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.sync_interval_secs.max(5)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if s.propagation.target().is_none() {
            continue;
        }
        let groups = match s.store.list_groups().await {
            Ok(g) => g,
            Err(err) => {
                tracing::warn!(%err, "cannot list groups for sync");
                continue;
            }
        };
        if groups.is_empty() {
            continue;
        }
        for i in 0..cfg.groups_per_sync.min(groups.len()) {
            let g = &groups[(next + i) % groups.len()];
            let (Ok(key), Some(lxmf)) = (<[u8; 64]>::try_from(g.identity_private_key.as_slice()), crate::wire::identity::parse_hash(&g.lxmf_dest_hash)) else {
                continue;
            };
            match s.propagation.fetch(&key, lxmf).await {
                Ok(mut fetched) => {
                    crate::metrics::propagation_sync("ok");
                    let mut settled = true;
                    for packed in std::mem::take(&mut fetched.messages) {
                        settled &= inbound.propagated(lxmf, packed).await != crate::api::lxmf::Received::Retry;
                    }
                    // Only now, with every post stored (or refused for good), may the node forget
                    // them; with one still to store, all stay and come again (stored ones are
                    // duplicates then).
                    if !settled {
                        tracing::info!(group = g.id, "posts from the propagation node not all stored; they stay on the node");
                    } else if let Err(err) = s.propagation.purge(fetched).await {
                        tracing::info!(%err, group = g.id, "propagation purge failed");
                    }
                }
                Err(err) => {
                    crate::metrics::propagation_sync("failed");
                    tracing::info!(%err, group = g.id, "propagation sync failed");
                }
            }
        }
        next = (next + cfg.groups_per_sync) % groups.len();
    }
}

/// What a person starting the server needs to reach it: each group's name and two hashes, where
/// the server listens, and how to get in from a stock client or from Python. Printed on stdout at
/// every start, beside the log on stderr.
pub fn first_run_block(groups: &[crate::store::Group], interfaces: &[crate::config::InterfaceConfig]) -> String {
    use crate::config::InterfaceConfig as I;
    let mut out = String::from("meshgroup is serving");
    let ifaces: Vec<String> = interfaces
        .iter()
        .map(|i| match i {
            I::TcpServer { listen } => format!("TCP {listen} (Reticulum peers connect here: TCPClientInterface)"),
            I::TcpClient { target } => format!("TCP client to {target}"),
            I::SharedInstance { instance_name, .. } => format!("the shared instance of rnsd ({instance_name})"),
        })
        .collect();
    out.push_str(&format!(
        " {} group{} on {}\n",
        groups.len(),
        if groups.len() == 1 { "" } else { "s" },
        if ifaces.is_empty() { "no interface".to_owned() } else { ifaces.join(", ") }
    ));
    for g in groups {
        out.push_str(&format!("  {} ({})\n", g.public_name, g.visibility));
        // The contact link carries the key, so a client can write before it hears an announce.
        let reach = match crate::group::contact_link(g) {
            Some(link) => format!("add {link} as a contact (QR: meshgroup group show {} --qr), then send /join", g.id),
            None => "message this address, send /join".to_owned(),
        };
        out.push_str(&format!("    lxmf.delivery  <{}>  from Sideband or MeshChat: {reach}\n", g.lxmf_dest_hash));
        out.push_str(&format!("    meshchat.group <{}>  from Python: RNS.Link to this destination, identify, request /api/v1/info\n", g.group_dest_hash));
    }
    if groups.is_empty() {
        out.push_str("  no groups yet: meshgroup group create --name \"My Group\", or serve --demo\n");
    }
    out.trim_end().to_owned()
}

/// Points stdout at /dev/null once the start-up block is out. reticulum-rs prints every link
/// close on stdout (`link: close /…/`, untimestamped) and logs the same event as a timestamped
/// warning, so without this each appears twice, interleaved with the log. The log (stderr) is
/// unaffected.
fn quiet_stdout() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let _ = std::io::stdout().flush();
    match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(null) => {
            // SAFETY: dup2 on two open descriptors; fd 1 stays valid (it now refers to /dev/null).
            if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
                tracing::warn!(err = %std::io::Error::last_os_error(), "cannot quiet stdout; link closes are printed there too");
            }
        }
        Err(err) => tracing::warn!(%err, "cannot open /dev/null; link closes are printed on stdout too"),
    }
}

/// Gauges are sampled on a timer, not updated per event.
async fn sample_gauges(store: Store, started: Instant, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sample = async {
            Ok::<_, StoreError>((store.count_groups().await?, store.count_all_members().await?, store.count_messages().await?, store.outbox_depth().await?))
        };
        match sample.await {
            Ok((g, m, msgs, outbox)) => crate::metrics::sample_totals(g, m, msgs, &outbox, started),
            Err(err) => tracing::warn!(%err, "cannot sample gauges"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(%err, "no SIGTERM handler; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_made_private_even_when_it_exists() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meshgroup-datadir-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        prepare_data_dir(&dir).expect("prepare");
        assert_eq!(std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_first_run_block_says_how_to_reach_each_group() {
        let t = crate::store::testing::sqlite().await.expect("store");
        let g = crate::group::create_group(&t.store, crate::group::CreateGroup { name: "Mesh Friends".into(), ..Default::default() }).await.expect("group");
        let (lxmf, group) = (g.lxmf_dest_hash.clone(), g.group_dest_hash.clone());
        let block = first_run_block(std::slice::from_ref(&g), &[crate::config::InterfaceConfig::TcpServer { listen: "127.0.0.1:4242".into() }]);
        assert!(block.starts_with("meshgroup is serving 1 group on TCP 127.0.0.1:4242"), "{block}");
        let link = crate::group::contact_link(&g).expect("link");
        assert!(link.starts_with(&format!("lxma://{lxmf}:")), "{link}");
        let reach =
            format!("lxmf.delivery  <{lxmf}>  from Sideband or MeshChat: add {link} as a contact (QR: meshgroup group show {} --qr), then send /join", g.id);
        assert!(block.lines().any(|l| l.trim() == reach), "{block}");
        assert!(block.contains(&format!("meshchat.group <{group}>  from Python")), "{block}");
        assert!(first_run_block(&[], &[]).contains("no groups yet"));
    }
}
