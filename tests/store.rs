//! Store tests: every table, each as a named SQLite test and a named PostgreSQL test (the latter runs when
//! MESHGROUP_TEST_DATABASE_URL is set).

use meshgroup::domain::DeliveryClass;
use meshgroup::group::{CreateGroup, create_group};
use meshgroup::store::{GroupPatch, HistoryQuery, InsertOutcome, NewMessage, NewOutboxRow, Order, Store, StoreError};
use meshgroup::store_test;

async fn group(store: &Store, name: &str) -> Result<meshgroup::store::Group, Box<dyn std::error::Error>> {
    Ok(create_group(store, CreateGroup { name: name.into(), ..Default::default() }).await?)
}

fn msg(group_id: i64, hash: &str, sender: &str) -> NewMessage {
    NewMessage {
        group_id,
        message_hash: hash.into(),
        sender_identity_hash: sender.into(),
        sender_display_name: String::new(),
        timestamp: 1_700_000_000.5,
        title: b"".to_vec(),
        content: format!("hello {hash}").into_bytes(),
        fields: vec![0x80],
        reply_to_id: None,
    }
}

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

store_test!(groups_crud, |t| {
    let s = &t.store;
    let g = group(s, "one").await?;
    assert_eq!(s.group_by_hash(&g.lxmf_dest_hash).await?.id, g.id, "{}", s.backend());
    assert_eq!(s.group_by_hash(&g.group_dest_hash).await?.id, g.id);
    assert_eq!(s.group_by_hash(&g.identity_hash).await?.id, g.id);
    let before = g.updated_at;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let g2 = s.update_group(g.id, GroupPatch { public_name: Some("two".into()), post_stamp_cost: Some(8), ..Default::default() }).await?;
    assert_eq!((g2.public_name.as_str(), g2.post_stamp_cost), ("two", 8));
    assert!(g2.updated_at > before);
    assert_eq!(s.groups_updated_since(before).await?.len(), 1);
    assert_eq!(s.count_groups().await?, 1);
    // a second group with the same identity is refused
    let dup = s
        .create_group(meshgroup::store::NewGroup {
            identity_hash: g.identity_hash.clone(),
            identity_private_key: g.identity_private_key.clone(),
            group_dest_hash: g.group_dest_hash.clone(),
            lxmf_dest_hash: g.lxmf_dest_hash.clone(),
            public_name: "x".into(),
            private_name: None,
            visibility: "public".into(),
            join_stamp_cost: 0,
            post_stamp_cost: 0,
            history_public: true,
            listed: false,
            founder_identity_hash: None,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })), "{dup:?}");
    assert!(matches!(s.group_by_id(999).await, Err(StoreError::NotFound { .. })));
});

store_test!(members_and_bans_exclude_each_other, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    s.add_member(g.id, A, "alice", 0, "full").await?;
    assert!(matches!(s.add_member(g.id, A, "alice", 0, "full").await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.count_members(g.id).await?, 1);
    let m = s.update_member(g.id, A, Some(6), Some("short"), None).await?;
    assert_eq!((m.permissions, m.notify_mode.as_str()), (6, "short"));
    s.ban(g.id, A, "spam", "owner").await?;
    assert!(s.member(g.id, A).await?.is_none(), "ban removes membership");
    assert!(matches!(s.add_member(g.id, A, "alice", 0, "full").await, Err(StoreError::Banned)));
    assert!(matches!(s.file_join_request(g.id, A, "alice", "").await, Err(StoreError::Banned)));
    assert!(matches!(s.ban(g.id, A, "again", "owner").await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.bans(g.id).await?.len(), 1);
    s.unban(g.id, A).await?;
    s.add_member(g.id, A, "alice", 0, "full").await?;
    s.remove_member(g.id, A).await?;
    assert!(matches!(s.remove_member(g.id, A).await, Err(StoreError::NotFound { .. })));
    let page = {
        for i in 0..5 {
            s.add_member(g.id, &format!("{i:032x}"), "m", 0, "full").await?;
        }
        s.list_members(g.id, 2, 2).await?
    };
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].identity_hash, format!("{:032x}", 2));
});

store_test!(join_requests_approve_and_reject, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    s.file_join_request(g.id, A, "alice", "hi").await?;
    s.file_join_request(g.id, A, "alice2", "again").await?;
    s.file_join_request(g.id, B, "bob", "").await?;
    assert_eq!(s.join_requests(g.id, "pending").await?.len(), 2);
    let m = s.approve_join_request(g.id, A, "owner", "full").await?;
    assert_eq!(m.display_name, "alice2");
    s.reject_join_request(g.id, B, "owner").await?;
    assert!(s.member(g.id, B).await?.is_none());
    assert_eq!(s.join_request(g.id, B).await?.map(|r| r.state), Some("rejected".to_owned()));
    assert!(matches!(s.approve_join_request(g.id, B, "owner", "full").await, Err(StoreError::NotFound { .. })));
    assert!(s.join_requests(g.id, "pending").await?.is_empty());
});

store_test!(messages_dedupe_page_and_tombstone, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    let other = group(s, "h").await?;
    let first = s.insert_message(msg(g.id, "h0", A)).await?;
    assert!(matches!(first, InsertOutcome::Inserted(_)));
    // the sender's retry is not an error; it reports the stored id
    assert_eq!(s.insert_message(msg(g.id, "h0", A)).await?, InsertOutcome::Duplicate(first.id()));
    // the same hash in another group is another message
    assert!(matches!(s.insert_message(msg(other.id, "h0", A)).await?, InsertOutcome::Inserted(_)));
    let mut ids = vec![first.id()];
    for i in 1..10 {
        ids.push(s.insert_message(msg(g.id, &format!("h{i}"), B)).await?.id());
    }
    let latest = s.history(g.id, HistoryQuery { limit: 3, ..Default::default() }).await?;
    assert_eq!(latest.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[9], ids[8], ids[7]]);
    let oldest_first = s.history(g.id, HistoryQuery { limit: 3, order: Order::OldestFirst, ..Default::default() }).await?;
    assert_eq!(oldest_first.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[7], ids[8], ids[9]]);
    let before = s.history(g.id, HistoryQuery { limit: 2, before_id: Some(ids[5]), ..Default::default() }).await?;
    assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    let after = s.history(g.id, HistoryQuery { limit: 2, after_id: Some(ids[5]), order: Order::OldestFirst, ..Default::default() }).await?;
    assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[6], ids[7]]);
    // A page says whether more lies beyond it, in the direction it was read.
    let more = |q: HistoryQuery| async move { s.history_page(g.id, q).await.map(|(rows, more)| (rows.len(), more)) };
    assert_eq!(more(HistoryQuery { limit: 2, after_id: Some(ids[5]), order: Order::OldestFirst, ..Default::default() }).await?, (2, true));
    assert_eq!(more(HistoryQuery { limit: 4, after_id: Some(ids[5]), ..Default::default() }).await?, (4, false));
    assert_eq!(more(HistoryQuery { limit: 5, before_id: Some(ids[5]), order: Order::OldestFirst, ..Default::default() }).await?, (5, false));
    assert_eq!(more(HistoryQuery { limit: 9, ..Default::default() }).await?, (9, true));
    let stored = s.message(g.id, ids[2]).await?;
    assert_eq!((stored.timestamp, stored.fields.as_slice()), (1_700_000_000.5, &[0x80u8][..]));
    let tomb = s.delete_message(g.id, ids[2], A).await?;
    assert!(tomb.deleted_at.is_some() && tomb.content.is_empty() && tomb.deleted_by.as_deref() == Some(A));
    assert!(matches!(s.message(other.id, ids[2]).await, Err(StoreError::NotFound { .. })), "scoped to group");
    assert_eq!(s.count_messages().await?, 11);
});

store_test!(outbox_batch_due_and_states, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    let id = s.insert_message(msg(g.id, "h", A)).await?.id();
    let rows: Vec<NewOutboxRow> = (0..1200)
        .map(|i| NewOutboxRow {
            group_id: g.id,
            member_identity_hash: format!("{i:032x}"),
            kind: "message",
            message_id: Some(id),
            event_id: None,
            reaction_id: None,
            mode: "full",
            class: DeliveryClass::Post,
        })
        .collect();
    assert_eq!(s.insert_outbox_batch(rows).await?, 1200);
    let now = meshgroup::store::now_ms();
    let due = s.due_outbox(now + 1, 10).await?;
    assert_eq!(due.len(), 10);
    // Every column comes back as written (PostgreSQL takes the batch another way than SQLite).
    let first = &due[0];
    assert_eq!((first.group_id, first.member_identity_hash.as_str(), first.kind.as_str()), (g.id, "0".repeat(32).as_str(), "message"));
    assert_eq!((first.message_id, first.event_id, first.mode.as_str(), first.state.as_str()), (Some(id), None, "full", "pending"));
    assert_eq!((first.attempts, first.last_error.as_deref()), (0, None));
    assert!(first.next_attempt_at <= now && first.created_at == first.next_attempt_at);
    s.update_outbox(due[0].id, "delivered", 1, now, None).await?;
    s.update_outbox(due[1].id, "pending", 1, now + 60_000, Some("timeout".into())).await?;
    let due_again = s.due_outbox(now + 1, 2000).await?;
    assert_eq!(due_again.len(), 1198);
    let depth = s.outbox_depth().await?;
    let post = DeliveryClass::Post;
    assert!(depth.contains(&("pending".to_owned(), post, 1199)) && depth.contains(&("delivered".to_owned(), post, 1)), "{depth:?}");
    assert_eq!(first.class, post.as_i16());
    // A member whose path arrives: their row waiting for it is due at once; a sent one is not.
    s.update_outbox(due[2].id, "sent", 1, now + 60_000, None).await?;
    let waiting = [due[1].member_identity_hash.clone(), due[2].member_identity_hash.clone()];
    assert_eq!(s.outbox_due_now(&waiting, now).await?, 1);
    let due_now = s.due_outbox(now + 1, 2000).await?;
    assert!(due_now.iter().any(|r| r.id == due[1].id) && !due_now.iter().any(|r| r.id == due[2].id));
});

store_test!(events_tickets_announces, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    s.insert_event(g.id, "kicked", "owner", A, "", true).await?;
    let ev = s.events_after(g.id, 0, 10).await?;
    assert_eq!(ev[0].kind, "kicked");
    assert_eq!(ev[1].kind, "created");
    let now = meshgroup::store::now_ms();
    s.insert_ticket(g.id, A, vec![7; 16], now + 1000).await?;
    s.insert_ticket(g.id, A, vec![8; 16], now - 1000).await?;
    assert_eq!(s.valid_tickets(g.id, A, now).await?.len(), 1);
    s.upsert_announce(B, "meshchat.group", A, vec![1; 64], b"one".to_vec(), 2).await?;
    s.upsert_announce(B, "meshchat.group", A, vec![1; 64], b"two".to_vec(), 3).await?;
    let a = s.announce(B).await?.ok_or("announce missing")?;
    assert_eq!((a.app_data.as_slice(), a.hops), (&b"two"[..], 3));
    assert_eq!(s.announces("meshchat.group").await?.len(), 1);
    s.remember_identity(A, "lxmf-a", &[5; 64]).await?;
    s.remember_identity(A, "lxmf-a", &[6; 64]).await?;
    assert_eq!(s.identity_by_lxmf_hash("lxmf-a").await?, Some(vec![6; 64]), "the latest verified key wins, found by its lxmf.delivery hash");
    assert_eq!(s.identity_by_lxmf_hash("lxmf-b").await?, None);
});

store_test!(identities_kept_before_the_lxmf_hash_get_it_at_start_up, |t| {
    let s = &t.store;
    // A row as an older server left it: no lxmf.delivery hash.
    s.remember_identity(A, "stale", &[7; 64]).await?;
    t.forget_lxmf_hash(A).await?;
    assert_eq!(s.identity_by_lxmf_hash("stale").await?, None);
    let want = meshgroup::wire::identity::lxmf_hash_of(A).ok_or("A is hex")?;
    assert_eq!(s.backfill_lxmf_hashes(meshgroup::wire::identity::lxmf_hash_of).await?, 1);
    assert_eq!(s.identity_by_lxmf_hash(&want).await?, Some(vec![7; 64]));
    assert_eq!(s.backfill_lxmf_hashes(meshgroup::wire::identity::lxmf_hash_of).await?, 0, "filled once");
});

store_test!(deleting_a_group_removes_its_rows, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    let keep = group(s, "keep").await?;
    for gid in [g.id, keep.id] {
        s.add_member(gid, A, "a", 0, "full").await?;
        s.ban(gid, B, "r", "owner").await?;
        s.file_join_request(gid, "cccccccccccccccccccccccccccccccc", "c", "").await?;
        let mid = s.insert_message(msg(gid, "h", A)).await?.id();
        s.insert_outbox_batch(vec![NewOutboxRow {
            group_id: gid,
            member_identity_hash: A.into(),
            kind: "message",
            message_id: Some(mid),
            event_id: None,
            reaction_id: None,
            mode: "full",
            class: DeliveryClass::Post,
        }])
        .await?;
        s.insert_ticket(gid, A, vec![1; 16], i64::MAX).await?;
    }
    s.delete_group(g.id).await?;
    assert!(matches!(s.group_by_id(g.id).await, Err(StoreError::NotFound { .. })));
    assert!(s.member(g.id, A).await?.is_none());
    assert!(s.bans(g.id).await?.is_empty());
    assert!(s.join_requests(g.id, "pending").await?.is_empty());
    assert!(s.events_after(g.id, 0, 10).await?.is_empty());
    assert!(s.history(g.id, HistoryQuery { limit: 10, ..Default::default() }).await?.is_empty());
    assert!(s.valid_tickets(g.id, A, 0).await?.is_empty());
    assert_eq!(s.outbox_depth().await?, vec![("pending".to_owned(), DeliveryClass::Post, 1)], "only the kept group's row");
    assert_eq!(s.count_members(keep.id).await?, 1);
    assert!(matches!(s.delete_group(g.id).await, Err(StoreError::NotFound { .. })));
});

fn row(group_id: i64, member: &str, message_id: Option<i64>, class: DeliveryClass) -> NewOutboxRow {
    NewOutboxRow { group_id, member_identity_hash: member.into(), kind: "message", message_id, event_id: None, reaction_id: None, mode: "full", class }
}

store_test!(due_outbox_puts_posts_first_and_groups_take_turns, |t| {
    let s = &t.store;
    let (busy, quiet) = (group(s, "busy").await?, group(s, "quiet").await?);
    // The busy group queued a digest and a notice, then a large post; the quiet group posts last.
    s.insert_outbox_batch(vec![row(busy.id, A, None, DeliveryClass::Digest), row(busy.id, B, None, DeliveryClass::Direct)]).await?;
    let bulk = s.insert_message(msg(busy.id, "bulk", A)).await?.id();
    s.insert_outbox_batch((0..50).map(|i| row(busy.id, &format!("{i:032x}"), Some(bulk), DeliveryClass::Post)).collect()).await?;
    let new = s.insert_message(msg(quiet.id, "new", A)).await?.id();
    s.insert_outbox_batch((0..3).map(|i| row(quiet.id, &format!("{:032x}", 100 + i), Some(new), DeliveryClass::Post)).collect()).await?;
    let due = s.due_outbox(meshgroup::store::now_ms() + 1, 8).await?;
    let groups: Vec<i64> = due.iter().map(|r| r.group_id).collect();
    assert_eq!(
        groups,
        vec![busy.id, quiet.id, busy.id, quiet.id, busy.id, quiet.id, busy.id, busy.id],
        "{}: the quiet group's post is not behind the bulk",
        s.backend()
    );
    assert!(due.iter().all(|r| r.class == DeliveryClass::Post.as_i16()));
    let all = s.due_outbox(meshgroup::store::now_ms() + 1, 1000).await?;
    let classes: Vec<i16> = all.iter().map(|r| r.class).collect();
    assert_eq!(classes[classes.len() - 2..], [DeliveryClass::Direct.as_i16(), DeliveryClass::Digest.as_i16()], "notices after posts, digests last");
    let busy_ids: Vec<i64> = all.iter().filter(|r| r.group_id == busy.id && r.class == 0).map(|r| r.id).collect();
    assert!(busy_ids.windows(2).all(|w| w[0] < w[1]), "each group's rows stay in order");
});

store_test!(scheduling_a_fanout_twice_writes_its_rows_once, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    let id = s.insert_message(msg(g.id, "h", A)).await?.id();
    let rows = || vec![row(g.id, B, Some(id), DeliveryClass::Post)];
    assert_eq!(s.schedule_fanout(rows(), meshgroup::store::FannedOut::Message(id)).await?, 1);
    assert_eq!(s.schedule_fanout(rows(), meshgroup::store::FannedOut::Message(id)).await?, 0, "{}: already scheduled", s.backend());
    assert_eq!(s.due_outbox(meshgroup::store::now_ms() + 1, 10).await?.len(), 1);
    assert!(s.unfanned(10).await?.0.is_empty());
});

store_test!(event_counts_and_digest_cursor, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    let start = s.digest_cursor(g.id, &["digest"]).await?;
    assert!(start > 0, "a group without digests starts after its newest event (its creation)");
    for _ in 0..3 {
        s.insert_event(g.id, "joined", A, A, "", false).await?;
    }
    s.insert_event(g.id, "left", A, A, "", false).await?;
    let (counts, last) = s.event_counts_since(g.id, start).await?;
    assert_eq!((counts.get("joined"), counts.get("left"), counts.get("created")), (Some(&3), Some(&1), None), "{}", s.backend());
    let digest = s.insert_event(g.id, "digest", "owner", &last.to_string(), "3 joined", true).await?;
    assert_eq!(s.digest_cursor(g.id, &["digest"]).await?, digest.id);
    assert_eq!(s.unfanned(10).await?.1.len(), 1, "only the event that owes a notice waits for its fan-out");
    assert!(s.event_counts_since(g.id, digest.id).await?.0.is_empty());
});

store_test!(a_batch_of_posts_is_one_commit_with_each_outcome_in_order, |t| {
    let s = &t.store;
    let g = group(s, "g").await?;
    let before = s.insert_message(msg(g.id, "old", A)).await?;
    let out = s.insert_message_batch(vec![msg(g.id, "n1", A), msg(g.id, "old", B), msg(g.id, "n2", B), msg(g.id, "n1", A)]).await?;
    assert!(matches!(out[0], InsertOutcome::Inserted(_)), "{}: {out:?}", s.backend());
    assert_eq!(out[1], InsertOutcome::Duplicate(before.id()), "stored before");
    assert!(matches!(out[2], InsertOutcome::Inserted(_)));
    assert_eq!(out[3], InsertOutcome::Duplicate(out[0].id()), "a retry within the batch");
    assert_eq!(s.history(g.id, HistoryQuery { limit: 10, ..Default::default() }).await?.len(), 3);
    assert!(s.insert_message_batch(Vec::new()).await?.is_empty());
});

store_test!(copy_hashes_resolve_and_reactions_count_and_cap, |t| {
    use meshgroup::store::{Copy, FannedOut, ReactionOutcome};
    let s = &t.store;
    let g = group(s, "threads").await?;
    let id = s.insert_message(msg(g.id, &"ab".repeat(32), A)).await?.id();
    let rows = vec![row(g.id, A, Some(id), DeliveryClass::Post), row(g.id, B, Some(id), DeliveryClass::Post)];
    s.schedule_fanout(rows, FannedOut::Message(id)).await?;
    let due = s.due_outbox(meshgroup::store::now_ms() + 1, 10).await?;
    let (a_row, b_row) = (due.iter().find(|r| r.member_identity_hash == A).ok_or("A")?, due.iter().find(|r| r.member_identity_hash == B).ok_or("B")?);
    s.record_copies(&[(a_row.id, [1; 32])]).await?;
    let copies = s.copies_of(id, &[A.into(), B.into(), "c".repeat(32)]).await?;
    assert_eq!(copies.get(A), Some(&Copy::Built(vec![1; 32])), "{}", s.backend());
    assert_eq!(copies.get(B), Some(&Copy::Queued), "B's copy is owed, not built");
    assert_eq!(copies.len(), 2, "no row, no copy");
    s.record_copies(&[(b_row.id, [2; 32])]).await?;
    // Any copy's hash, or the original's, names the message; a stranger's hash names none.
    for h in [[1u8; 32], [2; 32], [0xab; 32]] {
        assert_eq!(s.resolve_message_hash(g.id, &h).await?, Some(id), "{}", s.backend());
    }
    assert_eq!(s.resolve_message_hash(g.id, &[3; 32]).await?, None);
    let other = group(s, "other").await?;
    assert_eq!(s.resolve_message_hash(other.id, &[1; 32]).await?, None, "a copy resolves in its own group only");

    // Reactions: one per emoji per member, at most `max`, counted per message.
    let ReactionOutcome::Added(first) = s.add_reaction(g.id, id, B, "👍", 2).await? else { return Err("not added".into()) };
    assert_eq!(s.add_reaction(g.id, id, B, "👍", 2).await?, ReactionOutcome::Duplicate);
    assert!(matches!(s.add_reaction(g.id, id, B, "🎉", 2).await?, ReactionOutcome::Added(_)));
    assert_eq!(s.add_reaction(g.id, id, B, "📻", 2).await?, ReactionOutcome::Capped { max: 2 });
    assert!(matches!(s.add_reaction(g.id, id, A, "👍", 2).await?, ReactionOutcome::Added(_)));
    let counts = s.reaction_counts(&[id]).await?;
    assert_eq!(counts.get(&id), Some(&vec![("👍".to_owned(), 2), ("🎉".to_owned(), 1)]), "{}", s.backend());
    assert_eq!(s.unfanned_reactions(10).await?.len(), 3);
    assert_eq!(s.schedule_fanout(vec![], FannedOut::Reaction(first)).await?, 0);
    assert_eq!(s.unfanned_reactions(10).await?.len(), 2, "scheduling marks a reaction");
    assert!(s.remove_reaction(id, B, "🎉").await?);
    assert!(!s.remove_reaction(id, B, "🎉").await?, "removed already");
    // A tombstone stops the queued copies and drops the reactions.
    assert_eq!(s.cancel_copies(id).await?, 2);
    assert_eq!(s.count_reactions(id).await?, 0);
    assert!(matches!(s.reaction(first).await, Err(StoreError::NotFound { .. })));
});

store_test!(groups_by_activity_puts_public_and_active_groups_first, |t| {
    let s = &t.store;
    let quiet = group(s, "quiet").await?;
    let busy = group(s, "busy").await?;
    let hidden = create_group(s, CreateGroup { name: "hidden".into(), private: true, ..Default::default() }).await?;
    s.insert_message(msg(hidden.id, "p0", A)).await?;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    s.insert_message(msg(busy.id, "b0", A)).await?;
    assert_eq!(s.groups_by_activity().await?, vec![busy.id, quiet.id, hidden.id], "{}", s.backend());
});
