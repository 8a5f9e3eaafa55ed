//! One actor per hosted group: owns the group's [`GroupCore`] and serialises every operation on it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::fanout::Enqueue;
use crate::group::{Caller, FanoutJob, GroupCore, GroupError, Op, Reply};
use crate::store::{InsertOutcome, NewMessage};

/// The group's actor. The core sits behind an async mutex so that one operation at a time runs
/// even though handlers are futures; the store is the source of truth, so a restart just reloads.
pub struct GroupActor {
    core: Arc<Mutex<GroupCore>>,
    id: i64,
    fanout: Option<Recipient<Enqueue>>,
    digest_every: Duration,
    /// Posts wait here for the group commit; the committer task drains them in batches.
    posts: mpsc::Sender<PendingPost>,
    committer: Option<mpsc::Receiver<PendingPost>>,
}

/// Posts waiting for the group commit at most; beyond it a post is refused as rate limited.
const POST_QUEUE: usize = 1024;
/// Posts in one commit at most.
const POST_BATCH: usize = 256;

/// One post waiting for its commit, and who waits for the outcome.
struct PendingPost {
    caller: Caller,
    msg: NewMessage,
    done: oneshot::Sender<Result<InsertOutcome, GroupError>>,
}

impl GroupActor {
    /// `fanout` receives the deliveries each operation produces (none in tools without a network);
    /// the group's digests go out every `digest_every`.
    pub fn new(core: GroupCore, fanout: Option<Recipient<Enqueue>>, digest_every: Duration) -> Self {
        let id = core.group().id;
        let (posts, committer) = mpsc::channel(POST_QUEUE);
        GroupActor { core: Arc::new(Mutex::new(core)), id, fanout, digest_every, posts, committer: Some(committer) }
    }

    /// Queues a post for the group commit and waits for its outcome.
    fn post(&self, caller: Caller, msg: NewMessage) -> impl std::future::Future<Output = Result<InsertOutcome, GroupError>> + use<> {
        let (done, outcome) = oneshot::channel();
        let queued = self.posts.try_send(PendingPost { caller, msg, done });
        async move {
            if queued.is_err() {
                crate::metrics::posts_refused("queue_full");
                return Err(GroupError::RateLimited);
            }
            outcome.await.unwrap_or(Err(GroupError::RateLimited))
        }
    }
}

/// Commits posts in batches: whatever queued while the previous commit ran goes into the next,
/// so a burst costs a few commits instead of one per post, and a lone post waits for nobody.
async fn commit_posts(core: Arc<Mutex<GroupCore>>, fanout: Option<Recipient<Enqueue>>, mut rx: mpsc::Receiver<PendingPost>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < POST_BATCH
            && let Ok(p) = rx.try_recv()
        {
            batch.push(p);
        }
        let (posts, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| ((p.caller, p.msg), p.done)).unzip();
        let mut core = core.lock().await;
        let outcomes = if core.is_deleted() { posts.iter().map(|_| Err(GroupError::NotFound("group".into()))).collect() } else { core.post_many(posts).await };
        hand_off(&fanout, core.take_fanout());
        drop(core);
        for (done, outcome) in waiters.into_iter().zip(outcomes) {
            let _ = done.send(outcome);
        }
    }
}

/// Hands an operation's deliveries to the fan-out without waiting for them: the caller's proof or
/// response goes out right after the commit. A hand-off that fails leaves the item unscheduled in
/// the store, and the fan-out's periodic recovery schedules it.
fn hand_off(fanout: &Option<Recipient<Enqueue>>, jobs: Vec<FanoutJob>) {
    let Some(f) = fanout else { return };
    for job in jobs {
        f.do_send(Enqueue(job));
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(group = self.id, "group actor started");
        // The committer outlives a restart of the actor (it holds the core, not the context).
        if let Some(rx) = self.committer.take() {
            tokio::spawn(commit_posts(self.core.clone(), self.fanout.clone(), rx));
        }
        tracing::debug!(group = self.id, every = ?self.digest_every, "digest schedule");
        ctx.run_interval(self.digest_every, |act, ctx| {
            let (core, fanout) = (act.core.clone(), act.fanout.clone());
            ctx.spawn(
                async move {
                    let mut core = core.lock().await;
                    if let Err(err) = core.digest().await {
                        tracing::warn!(%err, group = core.group().id, "digest failed; it follows at the next interval");
                    }
                    hand_off(&fanout, core.take_fanout());
                }
                .into_actor(act),
            );
        });
    }
}

impl Supervised for GroupActor {
    /// A restarted actor re-reads its state: whatever it held in memory may be stale.
    fn restarting(&mut self, ctx: &mut Self::Context) {
        tracing::warn!(group = self.id, "group actor restarting");
        let core = self.core.clone();
        ctx.wait(
            async move {
                if let Err(err) = core.lock().await.reload().await {
                    tracing::error!(%err, "group reload after restart failed");
                }
            }
            .into_actor(self),
        );
    }
}

/// Runs one operation for a caller, with the group rules applied.
#[derive(Message)]
#[rtype(result = "Result<Reply, GroupError>")]
pub struct Call {
    pub caller: Caller,
    pub op: Op,
}

impl Handler<Call> for GroupActor {
    type Result = ResponseFuture<Result<Reply, GroupError>>;

    fn handle(&mut self, msg: Call, _ctx: &mut Self::Context) -> Self::Result {
        if let Op::Post(post) = msg.op {
            let outcome = self.post(msg.caller, post);
            return Box::pin(async move { outcome.await.map(Reply::Posted) });
        }
        let (core, fanout) = (self.core.clone(), self.fanout.clone());
        Box::pin(async move {
            let mut core = core.lock().await;
            let out = core.apply(&msg.caller, msg.op).await;
            hand_off(&fanout, core.take_fanout());
            out
        })
    }
}

/// Re-reads the group from the store, after a change made outside this process (the CLI).
#[derive(Message)]
#[rtype(result = "Result<(), GroupError>")]
pub struct Reload;

impl Handler<Reload> for GroupActor {
    type Result = ResponseFuture<Result<(), GroupError>>;

    fn handle(&mut self, _msg: Reload, _ctx: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.lock().await.reload().await })
    }
}

/// What the rest of the server needs to know about a group without asking for each field.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: i64,
    pub updated_at: i64,
    pub private_key: Vec<u8>,
    pub group_dest: [u8; 16],
    pub lxmf_dest: [u8; 16],
    /// App data for the `meshchat.group` announce.
    pub group_app_data: Vec<u8>,
    /// The name and post cost for the `lxmf.delivery` announce.
    pub lxmf_name: String,
    pub post_stamp_cost: u32,
    pub join_stamp_cost: u32,
}

/// Asks for the group's current [`Snapshot`].
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct GetSnapshot;

impl Handler<GetSnapshot> for GroupActor {
    type Result = ResponseFuture<Snapshot>;

    fn handle(&mut self, _msg: GetSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { snapshot(&*core.lock().await) })
    }
}

/// Builds the snapshot of a group core.
pub fn snapshot(core: &GroupCore) -> Snapshot {
    let g = core.group();
    let hash16 = |h: &str| -> [u8; 16] { crate::wire::identity::parse_hash(h).unwrap_or([0; 16]) };
    let lxmf_dest = hash16(&g.lxmf_dest_hash);
    let join = g.join_stamp_cost.max(0) as u32;
    let post = g.post_stamp_cost.max(0) as u32;
    Snapshot {
        id: g.id,
        updated_at: g.updated_at,
        private_key: g.identity_private_key.clone(),
        group_dest: hash16(&g.group_dest_hash),
        lxmf_dest,
        group_app_data: crate::api::group_announce(core.announced_name(), core.visibility(), core.member_count() as u64, join, post, &lxmf_dest),
        lxmf_name: core.announced_name().to_owned(),
        post_stamp_cost: post,
        join_stamp_cost: join,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{CreateGroup, create_group};

    #[test]
    fn the_digest_tick_runs_on_its_own() {
        let run = async {
            let t = crate::store::testing::sqlite().await.expect("store");
            let g = create_group(&t.store, CreateGroup { name: "tick".into(), ..Default::default() }).await.expect("group");
            let core = GroupCore::load(t.store.clone(), g.clone()).await.expect("core");
            let addr = GroupActor::new(core, None, Duration::from_millis(100)).start();
            let alice = Caller::Identity("a".repeat(32));
            addr.send(Call { caller: alice.clone(), op: Op::Join { display_name: "alice".into(), note: String::new(), stamp_verified: false } })
                .await
                .expect("mailbox")
                .expect("join");
            addr.send(Call { caller: alice, op: Op::SetNotifications { mode: None, digest: Some(true) } }).await.expect("mailbox").expect("digest on");
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let events = t.store.events_after(g.id, 0, 10).await.expect("events");
                if events.iter().any(|e| e.kind == crate::group::DIGEST_KIND) {
                    return;
                }
            }
            panic!("no digest within 2.5 s");
        };
        crate::block_on(run).expect("system");
    }
}
