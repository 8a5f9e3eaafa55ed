//! Queries on `join_requests`; approval makes the member in the same transaction.
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::{JoinRequest, Member, Store, StoreError, now_ms};
use entity::{group_ban, join_request};

impl Store {
    /// Files (or re-files) a pending request; a banned identity is refused.
    pub async fn file_join_request(&self, group_id: i64, identity_hash: &str, display_name: &str, note: &str) -> Result<JoinRequest, StoreError> {
        self.timed("file_join_request", async {
            let txn = self.begin_write().await?;
            if group_ban::Entity::find()
                .filter(group_ban::Column::GroupId.eq(group_id))
                .filter(group_ban::Column::IdentityHash.eq(identity_hash))
                .one(&txn)
                .await?
                .is_some()
            {
                return Err(StoreError::Banned);
            }
            let now = now_ms();
            let existing = join_request::Entity::find()
                .filter(join_request::Column::GroupId.eq(group_id))
                .filter(join_request::Column::IdentityHash.eq(identity_hash))
                .one(&txn)
                .await?;
            let row = match existing {
                Some(req) => {
                    let mut am: join_request::ActiveModel = req.into();
                    am.display_name = Set(display_name.to_owned());
                    am.note = Set(note.to_owned());
                    am.state = Set("pending".to_owned());
                    am.decided_by = Set(None);
                    am.updated_at = Set(now);
                    am.update(&txn).await?
                }
                None => {
                    join_request::ActiveModel {
                        group_id: Set(group_id),
                        identity_hash: Set(identity_hash.to_owned()),
                        display_name: Set(display_name.to_owned()),
                        note: Set(note.to_owned()),
                        state: Set("pending".to_owned()),
                        decided_by: Set(None),
                        created_at: Set(now),
                        updated_at: Set(now),
                        ..Default::default()
                    }
                    .insert(&txn)
                    .await?
                }
            };
            txn.commit().await?;
            Ok(row)
        })
        .await
    }

    /// Requests in a state (`pending`, …), oldest first.
    pub async fn join_requests(&self, group_id: i64, state: &str) -> Result<Vec<JoinRequest>, StoreError> {
        self.timed("join_requests", async {
            Ok(join_request::Entity::find()
                .filter(join_request::Column::GroupId.eq(group_id))
                .filter(join_request::Column::State.eq(state))
                .order_by_asc(join_request::Column::Id)
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn join_request(&self, group_id: i64, identity_hash: &str) -> Result<Option<JoinRequest>, StoreError> {
        self.timed("join_request", async {
            Ok(join_request::Entity::find()
                .filter(join_request::Column::GroupId.eq(group_id))
                .filter(join_request::Column::IdentityHash.eq(identity_hash))
                .one(&self.db)
                .await?)
        })
        .await
    }

    /// Approves a pending request and adds the member atomically.
    pub async fn approve_join_request(&self, group_id: i64, identity_hash: &str, decided_by: &str, notify_mode: &str) -> Result<Member, StoreError> {
        self.timed("approve_join_request", async {
            let txn = self.begin_write().await?;
            let req = pending(&txn, group_id, identity_hash).await?;
            let display_name = req.display_name.clone();
            let mut am: join_request::ActiveModel = req.into();
            am.state = Set("approved".to_owned());
            am.decided_by = Set(Some(decided_by.to_owned()));
            am.updated_at = Set(now_ms());
            am.update(&txn).await?;
            let member = super::members::new_member(group_id, identity_hash, &display_name, 0, notify_mode)
                .insert(&txn)
                .await
                .map_err(|e| StoreError::conflict_or_db(e, "member"))?;
            txn.commit().await?;
            Ok(member)
        })
        .await
    }

    /// Rejects a pending request; the row stays so the requester can be told.
    pub async fn reject_join_request(&self, group_id: i64, identity_hash: &str, decided_by: &str) -> Result<(), StoreError> {
        self.timed("reject_join_request", async {
            let txn = self.begin_write().await?;
            let req = pending(&txn, group_id, identity_hash).await?;
            let mut am: join_request::ActiveModel = req.into();
            am.state = Set("rejected".to_owned());
            am.decided_by = Set(Some(decided_by.to_owned()));
            am.updated_at = Set(now_ms());
            am.update(&txn).await?;
            txn.commit().await?;
            Ok(())
        })
        .await
    }
}

async fn pending<C: sea_orm::ConnectionTrait>(db: &C, group_id: i64, identity_hash: &str) -> Result<JoinRequest, StoreError> {
    join_request::Entity::find()
        .filter(join_request::Column::GroupId.eq(group_id))
        .filter(join_request::Column::IdentityHash.eq(identity_hash))
        .filter(join_request::Column::State.eq("pending"))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound { what: "pending join request" })
}
