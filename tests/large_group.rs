//! A large group in process, on every backend: the work one membership event causes does not grow
//! with the group, and a post is the one O(members) job.

use meshgroup::actors::fanout::schedule;
use meshgroup::domain::DeliveryClass;
use meshgroup::group::{Caller, CreateGroup, GroupCore, JoinOutcome, Op, create_group};
use meshgroup::store::NewMessage;
use meshgroup::store_test;

const MEMBERS: usize = 10_000;

fn member(i: usize) -> Caller {
    Caller::Identity(format!("{i:032x}"))
}

store_test!(ten_thousand_joins_push_nothing_and_one_post_schedules_every_member_at_once, |t| {
    let store = &t.store;
    let g = create_group(store, CreateGroup { name: "Big".into(), ..Default::default() }).await?;
    let mut core = GroupCore::load(store.clone(), g.clone()).await?;
    let mut jobs = 0;
    for i in 0..MEMBERS {
        assert_eq!(core.join(&member(i), &format!("m{i}"), "").await?, JoinOutcome::Joined);
        jobs += core.take_fanout().len();
    }
    assert_eq!(jobs, 0, "{}: no join pushes anything to anyone", store.backend());
    // Three members opt in to the digest; a kick tells its subject once.
    for i in 1..=3 {
        core.apply(&member(i), Op::SetNotifications { mode: None, digest: Some(true), text_only: None }).await?;
    }
    core.kick(&Caller::Owner, &format!("{:032x}", MEMBERS - 1)).await?;
    let kick = core.take_fanout();
    assert_eq!(kick.len(), 1);
    assert_eq!((kick[0].class, kick[0].recipients.len()), (DeliveryClass::Direct, 1), "the subject alone hears of the kick");
    assert_eq!(schedule(store, kick[0].clone()).await?, 1);

    // One digest for the whole wave, to the three subscribers only.
    core.digest().await?;
    let digest = core.take_fanout();
    assert_eq!(digest.len(), 1, "one digest per interval, however many joined");
    assert_eq!((digest[0].class, digest[0].recipients.len()), (DeliveryClass::Digest, 3));
    let ev = store.events_after(g.id, 0, 1).await?;
    assert!(ev[0].detail.starts_with(&format!("{MEMBERS} joined, 1 removed since ")), "{}", ev[0].detail);
    core.digest().await?;
    assert!(core.take_fanout().is_empty(), "nothing new, no second digest");

    let post = core
        .post(
            &member(0),
            NewMessage {
                group_id: g.id,
                message_hash: "ab".repeat(32),
                sender_identity_hash: format!("{:032x}", 0),
                sender_display_name: String::new(),
                timestamp: 1.0,
                title: Vec::new(),
                content: b"hello, everyone".to_vec(),
                fields: vec![0x80],
                reply_to_id: None,
            },
        )
        .await?;
    assert!(matches!(post, meshgroup::store::InsertOutcome::Inserted(_)));
    let jobs = core.take_fanout();
    assert_eq!(jobs.len(), 1);
    let recipients = MEMBERS - 2; // less the poster and the kicked member
    assert_eq!(schedule(store, jobs[0].clone()).await?, recipients as u64, "every member's row in one batch");
    let depth = store.outbox_depth().await?;
    let pending = |c: DeliveryClass| depth.iter().filter(|(s, k, _)| s == "pending" && *k == c).map(|(_, _, n)| *n).sum::<i64>();
    assert_eq!((pending(DeliveryClass::Post), pending(DeliveryClass::Direct)), (recipients as i64, 1), "no per-member notice rows");
});
