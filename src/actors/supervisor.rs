//! The supervisor: spawns one [`GroupActor`] per hosted group, keeps the registry from destination
//! hash to actor, registers and announces the destinations, and follows changes made in the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, mpsc};

use super::group::{Call, GetSnapshot, GroupActor, Reload, Snapshot, snapshot};
use crate::group::{Caller, GroupCore, GroupError, Op, Reply};
use crate::pacing::AnnounceSchedule;
use crate::store::{Group, Store};
use crate::transport::Node;
use crate::wire::stamp::ChallengeKey;

/// Which of a group's two destinations a hash names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestKind {
    /// `meshchat.group`: the link API.
    Api,
    /// `lxmf.delivery`: where LXMF clients post.
    Lxmf,
}

/// Where traffic for one destination goes.
#[derive(Clone)]
pub struct Route {
    pub group_id: i64,
    pub kind: DestKind,
    pub addr: Addr<GroupActor>,
    pub group_dest: [u8; 16],
    pub lxmf_dest: [u8; 16],
    pub challenge: ChallengeKey,
}

/// Destination hash to route; read by the router on every event, written only by the supervisor.
pub type Registry = Arc<RwLock<HashMap<[u8; 16], Route>>>;

/// Looks a destination up without holding the lock across an await.
pub fn lookup(registry: &Registry, dest: &[u8; 16]) -> Option<Route> {
    registry.read().ok().and_then(|r| r.get(dest).cloned())
}

/// Commands for the announcer task.
#[derive(Debug)]
pub enum AnnounceCmd {
    /// Start announcing a group, soon.
    Add(i64, Addr<GroupActor>),
    /// A group's name, visibility or costs changed: announce it soon (within a second).
    Now(i64),
    /// Someone new may listen: announce every group again, as the budget allows, in this order
    /// (public and most active first); groups it leaves out follow.
    All(Vec<i64>),
    Remove(i64),
}

struct Entry {
    addr: Addr<GroupActor>,
    updated_at: i64,
    group_dest: [u8; 16],
    lxmf_dest: [u8; 16],
}

struct State {
    store: Store,
    node: Node,
    fanout: Recipient<super::fanout::Enqueue>,
    /// Told when a group's name or keys may have changed, so its caches follow at once.
    changed: Recipient<super::fanout::GroupChanged>,
    registry: Registry,
    groups: HashMap<i64, Entry>,
    announce: mpsc::Sender<AnnounceCmd>,
    /// How often each group sends its digests.
    digest_every: Duration,
}

/// The supervisor actor. It owns its [`State`]; handlers that change it run atomically (the
/// mailbox, not a lock, orders them), taking the state out and putting it back.
pub struct Supervisor {
    /// `None` only while an atomic handler holds it, when no other handler can run.
    state: Option<State>,
    announce: mpsc::Sender<AnnounceCmd>,
    changed: Recipient<super::fanout::GroupChanged>,
}

/// How often the store is scanned for CLI changes when the admin socket is down.
const STORE_POLL: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Loads every group, starts its actor and registers its destinations, then starts the announcer
    /// (which announces each group's current stamp costs, from `stamps`).
    #[allow(clippy::too_many_arguments)] // each is a separate collaborator; none is optional
    pub async fn start(
        store: Store,
        node: Node,
        registry: Registry,
        fanout: Addr<super::fanout::FanoutActor>,
        config: &crate::config::Config,
        interfaces_open: tokio::sync::oneshot::Receiver<()>,
        life: &crate::lifecycle::Lifecycle,
        stamps: crate::stamps::StampPool,
    ) -> Result<Addr<Supervisor>, crate::store::StoreError> {
        let (cfg, notices) = (&config.reticulum, &config.notices);
        let (tx, rx) = mpsc::channel(ANNOUNCE_QUEUE);
        let mut st = State {
            store: store.clone(),
            node: node.clone(),
            fanout: fanout.clone().recipient(),
            changed: fanout.clone().recipient(),
            registry: registry.clone(),
            groups: HashMap::new(),
            announce: tx.clone(),
            digest_every: Duration::from_secs(notices.digest_interval_secs.max(1)),
        };
        // A group's turn sends two announces (meshchat.group and lxmf.delivery), and the budget
        // is in announces, so groups get half of it.
        let schedule = AnnounceSchedule::new(Duration::from_secs(cfg.announce_interval_secs.max(1)), cfg.announce_jitter, cfg.announce_budget_per_sec);
        // Started before the groups: it takes their commands (a bounded queue) at once.
        // The announcer's state outlives a run that panicked: the restarted run goes on with it.
        let announcer_state = Arc::new(Mutex::new(Announcer { schedule, rx, actors: HashMap::new(), open: Some(interfaces_open), stamps }));
        life.supervise("announcer", move |stop| announcer(announcer_state.clone(), node.clone(), stop));
        for g in store.list_groups().await? {
            st.spawn_group(g).await;
        }
        tracing::info!(groups = st.groups.len(), "group actors started");
        Ok(Supervisor { state: Some(st), announce: tx, changed: fanout.recipient() }.start())
    }
}

impl State {
    async fn spawn_group(&mut self, g: Group) {
        let id = g.id;
        let updated_at = g.updated_at;
        let key = g.identity_private_key.clone();
        let core = match GroupCore::load(self.store.clone(), g).await {
            Ok(c) => c,
            Err(err) => {
                tracing::error!(group = id, %err, "cannot load group; it is not served");
                return;
            }
        };
        let snap = snapshot(&core);
        // On a restart actix keeps this actor value and calls `restarting`, which reloads it.
        let (fanout, digest_every) = (self.fanout.clone(), self.digest_every);
        let addr = actix::Supervisor::start(move |_| GroupActor::new(core, Some(fanout), digest_every));
        let Ok(private_key) = <[u8; 64]>::try_from(key.as_slice()) else {
            tracing::error!(group = id, "stored identity key is not 64 bytes; group not served");
            return;
        };
        for (aspect, expected) in [("group", snap.group_dest), ("delivery", snap.lxmf_dest)] {
            let app = if aspect == "group" { "meshchat" } else { "lxmf" };
            match self.node.register_destination(&private_key, app, aspect).await {
                Ok(h) if h == expected => {}
                Ok(h) => tracing::error!(group = id, got = %hex::encode(h), "destination hash mismatch"),
                Err(err) => tracing::error!(group = id, %err, "cannot register destination"),
            }
        }
        let challenge = ChallengeKey::for_group(&key);
        if let Ok(mut reg) = self.registry.write() {
            for (dest, kind) in [(snap.group_dest, DestKind::Api), (snap.lxmf_dest, DestKind::Lxmf)] {
                reg.insert(
                    dest,
                    Route { group_id: id, kind, addr: addr.clone(), group_dest: snap.group_dest, lxmf_dest: snap.lxmf_dest, challenge: challenge.clone() },
                );
            }
        }
        if self.announce.send(AnnounceCmd::Add(id, addr.clone())).await.is_err() {
            tracing::warn!(group = id, "the announcer stopped; the group is not announced");
        }
        self.groups.insert(id, Entry { addr, updated_at, group_dest: snap.group_dest, lxmf_dest: snap.lxmf_dest });
    }

    async fn stop_group(&mut self, id: i64) {
        let Some(entry) = self.groups.remove(&id) else { return };
        if let Ok(mut reg) = self.registry.write() {
            reg.remove(&entry.group_dest);
            reg.remove(&entry.lxmf_dest);
        }
        for dest in [entry.group_dest, entry.lxmf_dest] {
            let _ = self.node.deregister_destination(dest).await;
        }
        let _ = self.announce.send(AnnounceCmd::Remove(id)).await;
        // Told to stop (its timer would keep it alive), and with no address left it is not restarted.
        entry.addr.do_send(super::group::Stop);
        drop(entry.addr);
        tracing::info!(group = id, "group stopped");
    }

    /// Brings the running groups in line with the store: new, deleted and changed groups.
    async fn sync(&mut self) -> Result<(), crate::store::StoreError> {
        let stored = self.store.group_versions().await?;
        let stored_ids: std::collections::HashSet<i64> = stored.iter().map(|(id, _)| *id).collect();
        let gone: Vec<i64> = self.groups.keys().filter(|id| !stored_ids.contains(id)).copied().collect();
        for id in gone {
            self.stop_group(id).await;
        }
        for (id, updated_at) in stored {
            match self.groups.get_mut(&id) {
                None => {
                    let g = self.store.group_by_id(id).await?;
                    tracing::info!(group = id, name = %g.public_name, "new group");
                    self.spawn_group(g).await;
                }
                Some(_) => self.reload_if_changed(id, updated_at).await,
            }
        }
        Ok(())
    }

    /// Reloads a running group whose row changed outside this process (`updated_at` moved), and
    /// has it announced and its caches dropped.
    async fn reload_if_changed(&mut self, id: i64, updated_at: i64) {
        let Some(e) = self.groups.get_mut(&id) else { return };
        if e.updated_at == updated_at {
            return;
        }
        e.updated_at = updated_at;
        match e.addr.send(Reload).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(group = id, %err, "reload failed"),
            Err(err) => tracing::error!(group = id, %err, "group actor unavailable; reload not delivered"),
        }
        self.changed.do_send(super::fanout::GroupChanged(id));
        let _ = self.announce.send(AnnounceCmd::Now(id)).await;
    }
}

impl Supervisor {
    /// Runs `work` on the state with the mailbox held, then puts the state back.
    fn exclusive<F, Fut>(&mut self, work: F) -> AtomicResponse<Self, ()>
    where
        F: FnOnce(State) -> Fut,
        Fut: std::future::Future<Output = State> + 'static,
    {
        let Some(state) = self.state.take() else {
            // Unreachable while atomic handlers are the only ones that take the state.
            tracing::error!("supervisor state missing; skipping");
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        AtomicResponse::new(Box::pin(fut::wrap_future::<_, Self>(work(state)).map(|state, act, _| act.state = Some(state))))
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// Starts the fallback for a server whose admin socket failed: the CLI then writes the store
/// only, and bumps the group's `updated_at`, so the supervisor scans the groups' versions every
/// second. With the socket up, changes arrive as messages and nothing is polled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollStore;

impl Handler<PollStore> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: PollStore, ctx: &mut Self::Context) {
        tracing::warn!(every = ?STORE_POLL, "admin socket down: polling the store for CLI changes");
        ctx.run_interval(STORE_POLL, |_, ctx| ctx.notify(Sync));
    }
}

/// Re-reads the list of groups and applies what changed (sent by the fallback poll).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sync;

impl Handler<Sync> for Supervisor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: Sync, _ctx: &mut Self::Context) -> Self::Result {
        // A sync still running when the next tick fires makes the tick wait; none pile up.
        self.exclusive(|mut st| async move {
            if let Err(err) = st.sync().await {
                tracing::warn!(%err, "group sync failed");
            }
            st
        })
    }
}

/// Brings one group in line with the store at once: starts a group created through the hosting
/// service or the CLI, reloads one whose row changed (`updated_at`), or stops a deleted one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh(pub i64);

impl Handler<Refresh> for Supervisor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Refresh, _ctx: &mut Self::Context) -> Self::Result {
        self.exclusive(|mut st| async move {
            match st.store.group_by_id(msg.0).await {
                Ok(g) if !st.groups.contains_key(&g.id) => st.spawn_group(g).await,
                Ok(g) => st.reload_if_changed(g.id, g.updated_at).await,
                Err(crate::store::StoreError::NotFound { .. }) => st.stop_group(msg.0).await,
                Err(err) => tracing::warn!(group = msg.0, %err, "group refresh failed"),
            }
            st
        })
    }
}

/// Runs an operation on a group's actor, then what the supervisor must do after it succeeded:
/// announce a new name or new settings soon, or stop a deleted group (its destinations are gone
/// before the caller hears back). Every entry point that changes groups goes through here.
pub async fn run_op(supervisor: &Addr<Supervisor>, route: &Route, caller: Caller, op: Op) -> Result<Result<Reply, GroupError>, MailboxError> {
    let announce = matches!(op, Op::Rename { .. } | Op::UpdateSettings(_));
    let deleting = matches!(op, Op::DeleteGroup);
    let reply = route.addr.send(Call { caller, op }).await?;
    if let Ok(Reply::Joined(crate::group::JoinOutcome::Joined)) = &reply {
        // A joiner may hold no announce of the group (stock clients show its name from the
        // `lxmf.delivery` one). reticulum-rs cannot aim an announce at one peer, so the group
        // announces on every interface, within the budget; the schedule coalesces a join wave
        // into one announce per group per second at most.
        supervisor.do_send(AnnounceNow(route.group_id));
    }
    if reply.is_ok() {
        if announce {
            supervisor.do_send(AnnounceSoon(route.group_id));
        }
        if deleting {
            let _ = supervisor.send(Refresh(route.group_id)).await;
        }
    }
    Ok(reply)
}

/// Asks for an announce of a group soon, for a new member who may not have heard one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnnounceNow(pub i64);

impl Handler<AnnounceNow> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: AnnounceNow, _ctx: &mut Self::Context) -> Self::Result {
        let announce = self.announce.clone();
        Box::pin(async move {
            let _ = announce.send(AnnounceCmd::Now(msg.0)).await;
        })
    }
}

/// Asks for an announce of a group soon (after a rename or settings change through the API).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnnounceSoon(pub i64);

impl Handler<AnnounceSoon> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: AnnounceSoon, ctx: &mut Self::Context) -> Self::Result {
        self.changed.do_send(super::fanout::GroupChanged(msg.0));
        self.handle(AnnounceNow(msg.0), ctx)
    }
}

/// Announcer commands waiting at most; the supervisor waits when it is full.
const ANNOUNCE_QUEUE: usize = 1024;

/// What the announcer keeps between its runs.
struct Announcer {
    schedule: AnnounceSchedule,
    rx: mpsc::Receiver<AnnounceCmd>,
    actors: HashMap<i64, Addr<GroupActor>>,
    /// Resolves once the interfaces are open: an announce sent before reaches nobody.
    open: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Each group's current stamp costs (raised under a flood) go into its announces.
    stamps: crate::stamps::StampPool,
}

/// Announces every group again, public and most active first, paced by the budget (sent by the
/// router when an interface reconnects or a client attaches).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReannounceAll;

impl Handler<ReannounceAll> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: ReannounceAll, _ctx: &mut Self::Context) -> Self::Result {
        let (store, announce) = (self.state.as_ref().map(|s| s.store.clone()), self.announce.clone());
        Box::pin(async move {
            let order = match store {
                Some(store) => store.groups_by_activity().await.unwrap_or_else(|err| {
                    tracing::warn!(%err, "cannot order the groups by activity; re-announcing by id");
                    Vec::new()
                }),
                None => Vec::new(),
            };
            let _ = announce.send(AnnounceCmd::All(order)).await;
        })
    }
}

/// Announces groups as the schedule allows, until `stop`: each group's `meshchat.group`
/// destination with its protobuf app data, then its `lxmf.delivery` destination with
/// `[name, post_stamp_cost]`. Commands are taken at once, announces only once interfaces are open.
async fn announcer(state: Arc<Mutex<Announcer>>, node: Node, stop: tokio_util::sync::CancellationToken) {
    let mut guard = state.lock().await;
    let Announcer { schedule, rx, actors, open, stamps } = &mut *guard;
    loop {
        let ready = open.is_none();
        let mut opened = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            // A dropped sender means the server gave up starting; announcing then harms nobody.
            _ = async { if let Some(o) = open.as_mut() { let _ = o.await; } }, if !ready => opened = true,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(AnnounceCmd::Add(id, addr)) => {
                    actors.insert(id, addr);
                    schedule.announce_now(id);
                }
                Some(AnnounceCmd::Now(id)) => schedule.announce_change(id),
                Some(AnnounceCmd::All(order)) => {
                    // Each is due a moment after the one scheduled before it, so they go out in this order.
                    let listed: std::collections::HashSet<i64> = order.iter().copied().collect();
                    let rest = actors.keys().copied().filter(|id| !listed.contains(id)).collect::<Vec<_>>();
                    for id in order.into_iter().filter(|id| actors.contains_key(id)).chain(rest) {
                        schedule.announce_change(id);
                    }
                }
                Some(AnnounceCmd::Remove(id)) => {
                    schedule.remove(id);
                    actors.remove(&id);
                }
            },
            (id, deferred) = schedule.next(), if ready => {
                if deferred {
                    crate::metrics::announce_deferred();
                }
                let Some(addr) = actors.get(&id) else { schedule.remove(id); continue };
                let Ok(Some(snap)) = addr.send(GetSnapshot).await else { continue };
                let snap = with_current_costs(stamps, snap);
                announce(&node, &snap, snap.group_dest, &snap.group_app_data, "meshchat.group").await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = schedule.pace() => {}
                }
                let lxmf = crate::wire::lxmf::delivery_announce(&snap.lxmf_name, snap.post_stamp_cost);
                announce(&node, &snap, snap.lxmf_dest, &lxmf, "lxmf.delivery").await;
            }
        }
        if opened {
            *open = None;
        }
    }
}

/// The snapshot with the costs the group asks for now (its own, plus the adaptive raise).
fn with_current_costs(stamps: &crate::stamps::StampPool, mut snap: Snapshot) -> Snapshot {
    let (join, post) = (stamps.cost(snap.id, snap.join_stamp_cost), stamps.cost(snap.id, snap.post_stamp_cost));
    if (join, post) != (snap.join_stamp_cost, snap.post_stamp_cost) {
        snap.group_app_data = crate::wire::announce::group_announce_with_costs(&snap.group_app_data, join, post);
        (snap.join_stamp_cost, snap.post_stamp_cost) = (join, post);
    }
    snap
}

/// Sends one of a group's two announces.
async fn announce(node: &Node, snap: &Snapshot, dest: [u8; 16], app_data: &[u8], aspect: &'static str) {
    match node.announce(dest, app_data).await {
        Ok(()) => crate::metrics::announce_sent(aspect),
        Err(err) => tracing::warn!(group = snap.id, %err, aspect, "announce failed"),
    }
}
