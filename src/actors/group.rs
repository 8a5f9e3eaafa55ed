//! One actor per hosted group: owns the group's [`GroupCore`] and serialises every operation on it.
//!
//! The core lives in the actor, not behind a lock. A handler that needs it takes it out and runs
//! as an [`AtomicResponse`]: actix processes no other message of this actor until that future is
//! done and has put the core back, so the mailbox, not a mutex, is what orders a group's work.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::fanout::Enqueue;
use crate::group::{Caller, FanoutJob, GroupCore, GroupError, InfoView, Op, Reply};
use crate::store::{InsertOutcome, NewMessage};

/// The group's actor. The store is the source of truth, so a restart just reloads.
pub struct GroupActor {
    /// `None` only while an atomic handler holds it, when no other handler can run.
    core: Option<GroupCore>,
    id: i64,
    fanout: Option<Recipient<Enqueue>>,
    digest_every: Duration,
    /// Posts waiting for the group commit; one [`Commit`] takes them all, in batches.
    pending: Vec<PendingPost>,
    /// Whether a [`Commit`] is on its way.
    commit_queued: bool,
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
        GroupActor { core: Some(core), id, fanout, digest_every, pending: Vec::new(), commit_queued: false }
    }

    /// Runs `work` on the core with the mailbox held, then hands its deliveries to the fan-out
    /// and puts the core back.
    /// Callers run the returned future as an [`AtomicResponse`] or with `ctx.wait`.
    fn exclusive<R, F, Fut>(&mut self, work: F) -> ResponseActFuture<Self, Result<R, GroupError>>
    where
        R: 'static,
        F: FnOnce(GroupCore) -> Fut,
        Fut: std::future::Future<Output = (GroupCore, Result<R, GroupError>)> + 'static,
    {
        let Some(core) = self.core.take() else {
            // Unreachable while atomic handlers are the only ones that take the core.
            tracing::error!(group = self.id, "group core missing; refusing the operation");
            return Box::pin(fut::ready(Err(GroupError::RateLimited)));
        };
        Box::pin(fut::wrap_future::<_, Self>(work(core)).map(|(mut core, out), act, _| {
            hand_off(&act.fanout, core.take_fanout());
            act.core = Some(core);
            out
        }))
    }

    /// Queues a post for the group commit and waits for its outcome.
    fn post(&mut self, caller: Caller, msg: NewMessage, ctx: &mut Context<Self>) -> oneshot::Receiver<Result<InsertOutcome, GroupError>> {
        let (done, outcome) = oneshot::channel();
        if self.pending.len() >= POST_QUEUE {
            crate::metrics::posts_refused("queue_full");
            let _ = done.send(Err(GroupError::RateLimited));
            return outcome;
        }
        self.pending.push(PendingPost { caller, msg, done });
        if !self.commit_queued {
            self.commit_queued = true;
            ctx.notify(Commit);
        }
        outcome
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
        tracing::debug!(group = self.id, every = ?self.digest_every, "group actor started");
        ctx.run_interval(self.digest_every, |act, ctx| {
            let id = act.id;
            // `wait` holds the mailbox, as an atomic handler does.
            ctx.wait(
                act.exclusive(|mut core| async move {
                    let out = core.digest().await;
                    (core, out)
                })
                .map(move |out, _, _| {
                    if let Err(err) = out {
                        tracing::warn!(%err, group = id, "digest failed; it follows at the next interval");
                    }
                }),
            );
        });
    }
}

impl Supervised for GroupActor {
    /// A restarted actor re-reads its state: whatever it held in memory may be stale.
    fn restarting(&mut self, ctx: &mut Self::Context) {
        tracing::warn!(group = self.id, "group actor restarting");
        // A restart drops the queued `Commit`: posts still waiting would wait forever.
        self.commit_queued = !self.pending.is_empty();
        if self.commit_queued {
            ctx.notify(Commit);
        }
        ctx.wait(
            self.exclusive(|mut core| async move {
                let out = core.reload().await;
                (core, out)
            })
            .map(|out, _, _| {
                if let Err(err) = out {
                    tracing::error!(%err, "group reload after restart failed");
                }
            }),
        );
    }
}

/// Commits the posts waiting, in batches: whatever queued while the previous commit ran goes into
/// the next, so a burst costs a few commits instead of one per post, and a lone post waits for nobody.
#[derive(Message)]
#[rtype(result = "()")]
struct Commit;

impl Handler<Commit> for GroupActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: Commit, ctx: &mut Self::Context) -> Self::Result {
        let take = self.pending.len().min(POST_BATCH);
        let batch: Vec<PendingPost> = self.pending.drain(..take).collect();
        let (posts, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| ((p.caller, p.msg), p.done)).unzip();
        if self.pending.is_empty() {
            self.commit_queued = false;
        } else {
            ctx.notify(Commit);
        }
        let committed = self.exclusive(|mut core| async move {
            let outcomes =
                if core.is_deleted() { posts.iter().map(|_| Err(GroupError::NotFound("group".into()))).collect() } else { core.post_many(posts).await };
            (core, Ok(outcomes))
        });
        AtomicResponse::new(Box::pin(committed.map(move |outcomes, _, _| {
            let outcomes: Vec<Result<InsertOutcome, GroupError>> = outcomes.unwrap_or_else(|_| waiters.iter().map(|_| Err(GroupError::RateLimited)).collect());
            for (done, outcome) in waiters.into_iter().zip(outcomes) {
                let _ = done.send(outcome);
            }
        })))
    }
}

/// Stores a member's post through the group commit; the outcome says whether it was new.
#[derive(Message)]
#[rtype(result = "Result<InsertOutcome, GroupError>")]
pub struct Post {
    pub caller: Caller,
    pub msg: NewMessage,
}

impl Handler<Post> for GroupActor {
    type Result = ResponseFuture<Result<InsertOutcome, GroupError>>;

    /// Not atomic: the post waits for its batch while other messages go on.
    fn handle(&mut self, msg: Post, ctx: &mut Self::Context) -> Self::Result {
        let outcome = self.post(msg.caller, msg.msg, ctx);
        Box::pin(async move { outcome.await.unwrap_or(Err(GroupError::RateLimited)) })
    }
}

/// What the caller may see of the group: name, visibility, counts, costs, their own standing.
#[derive(Message)]
#[rtype(result = "Result<InfoView, GroupError>")]
pub struct GetInfo {
    pub caller: Caller,
}

impl Handler<GetInfo> for GroupActor {
    type Result = Result<InfoView, GroupError>;

    /// Answered from memory at once, without the store.
    fn handle(&mut self, msg: GetInfo, _ctx: &mut Self::Context) -> Self::Result {
        self.core.as_ref().ok_or(GroupError::RateLimited)?.info_for(&msg.caller)
    }
}

/// Runs one operation of the link API, the text commands or the CLI for a caller, with the group
/// rules applied. Those three produce an [`Op`] from one decoder each and encode the [`Reply`]
/// generically; callers that need one particular answer use [`Post`] or [`GetInfo`].
#[derive(Message)]
#[rtype(result = "Result<Reply, GroupError>")]
pub struct Call {
    pub caller: Caller,
    pub op: Op,
}

impl Handler<Call> for GroupActor {
    type Result = ResponseFuture<Result<Reply, GroupError>>;

    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) -> Self::Result {
        match msg.op {
            Op::Post(post) => {
                let posted = self.handle(Post { caller: msg.caller, msg: post }, ctx);
                return Box::pin(async move { posted.await.map(Reply::Posted) });
            }
            Op::Info => {
                let info = self.handle(GetInfo { caller: msg.caller }, ctx).map(Reply::Info);
                return Box::pin(std::future::ready(info));
            }
            _ => {}
        }
        // The operation runs atomically; the caller waits for its reply through a oneshot, so
        // this handler's own future is not the one that holds the mailbox.
        let (done, reply) = oneshot::channel();
        ctx.wait(
            self.exclusive(|mut core| async move {
                let out = core.apply(&msg.caller, msg.op).await;
                (core, Ok(out))
            })
            .map(move |out: Result<Result<Reply, GroupError>, GroupError>, _, _| {
                let _ = done.send(out.and_then(|r| r));
            }),
        );
        Box::pin(async move { reply.await.unwrap_or(Err(GroupError::RateLimited)) })
    }
}

/// Stops the actor for good: its group was deleted (the digest timer would keep it alive).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for GroupActor {
    type Result = ();

    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Re-reads the group from the store, after a change made outside this process (the CLI).
#[derive(Message)]
#[rtype(result = "Result<(), GroupError>")]
pub struct Reload;

impl Handler<Reload> for GroupActor {
    type Result = AtomicResponse<Self, Result<(), GroupError>>;

    fn handle(&mut self, _msg: Reload, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.exclusive(|mut core| async move {
            let out = core.reload().await;
            (core, out)
        }))
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
#[rtype(result = "Option<Snapshot>")]
pub struct GetSnapshot;

impl Handler<GetSnapshot> for GroupActor {
    type Result = Option<Snapshot>;

    /// Read from memory at once; `None` only if the core is missing, which no handler allows.
    fn handle(&mut self, _msg: GetSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        self.core.as_ref().map(snapshot)
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
        group_app_data: crate::wire::announce::group_announce(core.announced_name(), core.visibility(), core.member_count() as u64, join, post, &lxmf_dest),
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
            addr.send(Call { caller: alice, op: Op::SetNotifications { mode: None, digest: Some(true), text_only: None } })
                .await
                .expect("mailbox")
                .expect("digest on");
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
