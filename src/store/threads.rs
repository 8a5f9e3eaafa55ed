//! Queries for threads and reactions across the relay: each member's copy hash (kept on its
//! outbox row), resolving an inbound target hash to the group message, and reactions.
use std::collections::HashMap;

use sea_orm::sea_query::{CaseStatement, Expr, OnConflict};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{Store, StoreError, now_ms};
use entity::message_reaction as reaction;
use entity::{group_message, outbox};

pub use entity::message_reaction::Model as Reaction;

/// Copy hashes written per UPDATE: three bound values a row stay far below both backends' limits.
const RECORD_CHUNK: usize = 300;

/// Where a member's copy of a message stands, for mapping a reply or reaction to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Copy {
    /// Built (and so sent, or about to be): its LXMF hash.
    Built(Vec<u8>),
    /// Owed but not built yet: a copy that names it must wait, or it would name nothing.
    Queued,
}

/// What became of a reaction a member added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReactionOutcome {
    /// Stored: its id, to fan out.
    Added(i64),
    /// The member already reacted so to this message (a retry): nothing new.
    Duplicate,
    /// The member holds `max` reactions on this message already.
    Capped { max: u64 },
}

impl Store {
    /// The group message a hash names: the hash of the message as its author sent it, or of any
    /// member's copy of it. `None` when the group has no such message.
    pub async fn resolve_message_hash(&self, group_id: i64, hash: &[u8; 32]) -> Result<Option<i64>, StoreError> {
        self.timed("resolve_message_hash", async {
            let original = group_message::Entity::find()
                .select_only()
                .column(group_message::Column::Id)
                .filter(group_message::Column::GroupId.eq(group_id))
                .filter(group_message::Column::MessageHash.eq(hex::encode(hash)))
                .into_tuple::<i64>()
                .one(&self.db)
                .await?;
            if original.is_some() {
                return Ok(original);
            }
            Ok(outbox::Entity::find()
                .select_only()
                .column(outbox::Column::MessageId)
                .filter(outbox::Column::CopyHash.eq(hash.to_vec()))
                .filter(outbox::Column::GroupId.eq(group_id))
                .filter(outbox::Column::Kind.eq("message"))
                .into_tuple::<Option<i64>>()
                .one(&self.db)
                .await?
                .flatten())
        })
        .await
    }

    /// Records the LXMF hash of each built copy on its outbox row (`(row id, hash)`), a few
    /// statements per round however many copies it has, before any of them goes out: a reply
    /// that comes back fast already resolves.
    pub async fn record_copies(&self, copies: &[(i64, [u8; 32])]) -> Result<(), StoreError> {
        if copies.is_empty() {
            return Ok(());
        }
        self.timed("record_copies", async {
            for chunk in copies.chunks(RECORD_CHUNK) {
                let mut case = CaseStatement::new();
                for (id, hash) in chunk {
                    case = case.case(outbox::Column::Id.eq(*id), Expr::val(hash.to_vec()));
                }
                outbox::Entity::update_many()
                    .col_expr(outbox::Column::CopyHash, case.into())
                    .filter(outbox::Column::Id.is_in(chunk.iter().map(|(id, _)| *id)))
                    .exec(&self.db)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Each listed member's copy of a message (members without one are left out): built, with
    /// its hash, or still owed. Expired copies count as none.
    pub async fn copies_of(&self, message_id: i64, members: &[String]) -> Result<HashMap<String, Copy>, StoreError> {
        self.timed("copies_of", async {
            let mut out = HashMap::new();
            for chunk in members.chunks(500) {
                let rows = outbox::Entity::find()
                    .select_only()
                    .column(outbox::Column::MemberIdentityHash)
                    .column(outbox::Column::CopyHash)
                    .column(outbox::Column::State)
                    .filter(outbox::Column::MessageId.eq(message_id))
                    .filter(outbox::Column::MemberIdentityHash.is_in(chunk.iter().cloned()))
                    .filter(outbox::Column::Kind.eq("message"))
                    .into_tuple::<(String, Option<Vec<u8>>, String)>()
                    .all(&self.db)
                    .await?;
                for (member, hash, state) in rows {
                    match hash {
                        Some(h) => {
                            out.insert(member, Copy::Built(h));
                        }
                        None if state == "pending" || state == "sent" => {
                            out.insert(member, Copy::Queued);
                        }
                        None => {}
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Stops the queued copies of a deleted message (and of reactions to it): none goes out
    /// after the tombstone. Returns how many were stopped.
    pub async fn cancel_copies(&self, message_id: i64) -> Result<u64, StoreError> {
        self.timed("cancel_copies", async {
            let done = outbox::Entity::update_many()
                .col_expr(outbox::Column::State, Expr::value("expired"))
                .col_expr(outbox::Column::LastError, Expr::value("message deleted"))
                .col_expr(outbox::Column::UpdatedAt, Expr::value(now_ms()))
                .filter(outbox::Column::MessageId.eq(message_id))
                .filter(outbox::Column::State.is_in(["pending", "sent"]))
                .exec(&self.db)
                .await?;
            reaction::Entity::delete_many().filter(reaction::Column::MessageId.eq(message_id)).exec(&self.db).await?;
            Ok(done.rows_affected)
        })
        .await
    }

    /// Adds a member's reaction to a message, at most `max` per member per message.
    pub async fn add_reaction(&self, group_id: i64, message_id: i64, member: &str, emoji: &str, max: u64) -> Result<ReactionOutcome, StoreError> {
        self.timed("add_reaction", async {
            let txn = self.begin_write().await?;
            let mine = reaction::Entity::find()
                .filter(reaction::Column::MessageId.eq(message_id))
                .filter(reaction::Column::MemberIdentityHash.eq(member))
                .all(&txn)
                .await?;
            if mine.iter().any(|r| r.emoji == emoji) {
                return Ok(ReactionOutcome::Duplicate);
            }
            if mine.len() as u64 >= max {
                return Ok(ReactionOutcome::Capped { max });
            }
            let row = reaction::ActiveModel {
                group_id: Set(group_id),
                message_id: Set(message_id),
                member_identity_hash: Set(member.to_owned()),
                emoji: Set(emoji.to_owned()),
                created_at: Set(now_ms()),
                fanned_out: Set(false),
                ..Default::default()
            };
            let inserted = reaction::Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([reaction::Column::MessageId, reaction::Column::MemberIdentityHash, reaction::Column::Emoji]).do_nothing().to_owned(),
                )
                .exec(&txn)
                .await;
            let outcome = match inserted {
                Ok(r) => ReactionOutcome::Added(r.last_insert_id),
                Err(DbErr::RecordNotInserted) => ReactionOutcome::Duplicate,
                Err(e) => return Err(e.into()),
            };
            txn.commit().await?;
            Ok(outcome)
        })
        .await
    }

    /// Removes a member's reaction; whether there was one.
    pub async fn remove_reaction(&self, message_id: i64, member: &str, emoji: &str) -> Result<bool, StoreError> {
        self.timed("remove_reaction", async {
            let done = reaction::Entity::delete_many()
                .filter(reaction::Column::MessageId.eq(message_id))
                .filter(reaction::Column::MemberIdentityHash.eq(member))
                .filter(reaction::Column::Emoji.eq(emoji))
                .exec(&self.db)
                .await?;
            Ok(done.rows_affected > 0)
        })
        .await
    }

    /// A reaction by id; `NotFound` once it was removed.
    pub async fn reaction(&self, id: i64) -> Result<Reaction, StoreError> {
        self.timed("reaction", async { reaction::Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound { what: "reaction" }) }).await
    }

    /// Reactions stored but never scheduled (a crash between the two commits), oldest first.
    pub async fn unfanned_reactions(&self, limit: u64) -> Result<Vec<Reaction>, StoreError> {
        self.timed("unfanned_reactions", async {
            Ok(reaction::Entity::find().filter(reaction::Column::FannedOut.eq(false)).order_by_asc(reaction::Column::Id).limit(limit).all(&self.db).await?)
        })
        .await
    }

    /// Reaction counts of a page of messages (one aggregate): message id -> `(emoji, count)`,
    /// most frequent first.
    pub async fn reaction_counts(&self, message_ids: &[i64]) -> Result<HashMap<i64, Vec<(String, u64)>>, StoreError> {
        if message_ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.timed("reaction_counts", async {
            let rows = reaction::Entity::find()
                .select_only()
                .column(reaction::Column::MessageId)
                .column(reaction::Column::Emoji)
                .column_as(reaction::Column::Id.count(), "n")
                .filter(reaction::Column::MessageId.is_in(message_ids.iter().copied()))
                .group_by(reaction::Column::MessageId)
                .group_by(reaction::Column::Emoji)
                .into_tuple::<(i64, String, i64)>()
                .all(&self.db)
                .await?;
            let mut out: HashMap<i64, Vec<(String, u64)>> = HashMap::new();
            for (id, emoji, n) in rows {
                out.entry(id).or_default().push((emoji, n.max(0) as u64));
            }
            for counts in out.values_mut() {
                counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            }
            Ok(out)
        })
        .await
    }

    /// How many reactions a message holds (tests and checks).
    pub async fn count_reactions(&self, message_id: i64) -> Result<u64, StoreError> {
        self.timed("count_reactions", async { Ok(reaction::Entity::find().filter(reaction::Column::MessageId.eq(message_id)).count(&self.db).await?) }).await
    }

    /// Marks a reaction whose outbox rows are written (inside the scheduling transaction).
    pub(super) async fn mark_reaction_fanned_out(txn: &sea_orm::DatabaseTransaction, id: i64) -> Result<bool, StoreError> {
        let marked = reaction::Entity::update_many()
            .col_expr(reaction::Column::FannedOut, Expr::value(true))
            .filter(reaction::Column::Id.eq(id))
            .filter(reaction::Column::FannedOut.eq(false))
            .exec(txn)
            .await?;
        Ok(marked.rows_affected > 0)
    }
}
