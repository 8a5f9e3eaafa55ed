//! Queries on `group_members` and `group_bans`: a member is never banned and a banned identity never a member.
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};

use super::{Ban, Member, Store, StoreError, now_ms};
use entity::{group_ban, group_member, join_request};

/// A membership row, as joining, approval and the operator make it.
pub(super) fn new_member(group_id: i64, identity_hash: &str, display_name: &str, permissions: i64, notify_mode: &str) -> group_member::ActiveModel {
    let now = now_ms();
    group_member::ActiveModel {
        group_id: Set(group_id),
        identity_hash: Set(identity_hash.to_owned()),
        display_name: Set(display_name.to_owned()),
        permissions: Set(permissions),
        notify_mode: Set(notify_mode.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        last_seen: Set(now),
        digest: Set(false),
        text_only: Set(false),
        ..Default::default()
    }
}

impl Store {
    /// Adds a member; refuses a banned identity (`Banned`) and a second membership (`Conflict`).
    pub async fn add_member(&self, group_id: i64, identity_hash: &str, display_name: &str, permissions: i64, notify_mode: &str) -> Result<Member, StoreError> {
        self.timed("add_member", async {
            let txn = self.begin_write().await?;
            let banned = group_ban::Entity::find()
                .filter(group_ban::Column::GroupId.eq(group_id))
                .filter(group_ban::Column::IdentityHash.eq(identity_hash))
                .one(&txn)
                .await?;
            if banned.is_some() {
                return Err(StoreError::Banned);
            }
            let member = new_member(group_id, identity_hash, display_name, permissions, notify_mode)
                .insert(&txn)
                .await
                .map_err(|e| StoreError::conflict_or_db(e, "member"))?;
            txn.commit().await?;
            Ok(member)
        })
        .await
    }

    pub async fn member(&self, group_id: i64, identity_hash: &str) -> Result<Option<Member>, StoreError> {
        self.timed("member", async {
            Ok(group_member::Entity::find()
                .filter(group_member::Column::GroupId.eq(group_id))
                .filter(group_member::Column::IdentityHash.eq(identity_hash))
                .one(&self.db)
                .await?)
        })
        .await
    }

    /// One page of members in join order.
    pub async fn list_members(&self, group_id: i64, offset: u64, limit: u64) -> Result<Vec<Member>, StoreError> {
        self.timed("list_members", async {
            Ok(group_member::Entity::find()
                .filter(group_member::Column::GroupId.eq(group_id))
                .order_by_asc(group_member::Column::Id)
                .offset(offset)
                .limit(limit)
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn count_members(&self, group_id: i64) -> Result<u64, StoreError> {
        self.timed("count_members", async { Ok(group_member::Entity::find().filter(group_member::Column::GroupId.eq(group_id)).count(&self.db).await?) }).await
    }

    /// Members across all groups, for the `meshgroup_members` gauge.
    pub async fn count_all_members(&self) -> Result<u64, StoreError> {
        self.timed("count_all_members", async { Ok(group_member::Entity::find().count(&self.db).await?) }).await
    }

    /// Removes a member; `NotFound` if they were not one.
    pub async fn remove_member(&self, group_id: i64, identity_hash: &str) -> Result<(), StoreError> {
        self.timed("remove_member", async {
            let res = group_member::Entity::delete_many()
                .filter(group_member::Column::GroupId.eq(group_id))
                .filter(group_member::Column::IdentityHash.eq(identity_hash))
                .exec(&self.db)
                .await?;
            if res.rows_affected == 0 {
                return Err(StoreError::NotFound { what: "member" });
            }
            Ok(())
        })
        .await
    }

    /// Changes a member's fields; `None` leaves one as it is.
    pub async fn update_member(
        &self,
        group_id: i64,
        identity_hash: &str,
        permissions: Option<i64>,
        notify_mode: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<Member, StoreError> {
        self.timed("update_member", async {
            let current = self.member(group_id, identity_hash).await?.ok_or(StoreError::NotFound { what: "member" })?;
            let mut am: group_member::ActiveModel = current.into();
            if let Some(p) = permissions {
                am.permissions = Set(p);
            }
            if let Some(m) = notify_mode {
                am.notify_mode = Set(m.to_owned());
            }
            if let Some(n) = display_name {
                am.display_name = Set(n.to_owned());
            }
            let now = now_ms();
            am.updated_at = Set(now);
            am.last_seen = Set(now);
            Ok(am.update(&self.db).await?)
        })
        .await
    }

    /// Opts a member in to or out of the membership digest.
    pub async fn set_member_digest(&self, group_id: i64, identity_hash: &str, on: bool) -> Result<Member, StoreError> {
        self.timed("set_member_digest", async {
            let current = self.member(group_id, identity_hash).await?.ok_or(StoreError::NotFound { what: "member" })?;
            let mut am: group_member::ActiveModel = current.into();
            am.digest = Set(on);
            am.updated_at = Set(now_ms());
            Ok(am.update(&self.db).await?)
        })
        .await
    }

    /// Turns a member's text-only setting on or off.
    pub async fn set_member_text_only(&self, group_id: i64, identity_hash: &str, on: bool) -> Result<Member, StoreError> {
        self.timed("set_member_text_only", async {
            let current = self.member(group_id, identity_hash).await?.ok_or(StoreError::NotFound { what: "member" })?;
            let mut am: group_member::ActiveModel = current.into();
            am.text_only = Set(on);
            am.updated_at = Set(now_ms());
            Ok(am.update(&self.db).await?)
        })
        .await
    }

    /// Which of the listed members are text-only (one query for a delivery round).
    pub async fn text_only_members(&self, group_id: i64, members: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        self.timed("text_only_members", async {
            let mut out = std::collections::HashSet::new();
            for chunk in members.chunks(500) {
                let rows = group_member::Entity::find()
                    .select_only()
                    .column(group_member::Column::IdentityHash)
                    .filter(group_member::Column::GroupId.eq(group_id))
                    .filter(group_member::Column::TextOnly.eq(true))
                    .filter(group_member::Column::IdentityHash.is_in(chunk.iter().cloned()))
                    .into_tuple::<String>()
                    .all(&self.db)
                    .await?;
                out.extend(rows);
            }
            Ok(out)
        })
        .await
    }

    /// Bans an identity: in one transaction the membership and any join request go, the ban is recorded.
    pub async fn ban(&self, group_id: i64, identity_hash: &str, reason: &str, banned_by: &str) -> Result<Ban, StoreError> {
        self.timed("ban", async {
            let txn = self.db.begin().await?;
            group_member::Entity::delete_many()
                .filter(group_member::Column::GroupId.eq(group_id))
                .filter(group_member::Column::IdentityHash.eq(identity_hash))
                .exec(&txn)
                .await?;
            join_request::Entity::delete_many()
                .filter(join_request::Column::GroupId.eq(group_id))
                .filter(join_request::Column::IdentityHash.eq(identity_hash))
                .exec(&txn)
                .await?;
            let ban = group_ban::ActiveModel {
                group_id: Set(group_id),
                identity_hash: Set(identity_hash.to_owned()),
                reason: Set(reason.to_owned()),
                banned_by: Set(banned_by.to_owned()),
                created_at: Set(now_ms()),
                ..Default::default()
            }
            .insert(&txn)
            .await
            .map_err(|e| StoreError::conflict_or_db(e, "ban"))?;
            txn.commit().await?;
            Ok(ban)
        })
        .await
    }

    pub async fn unban(&self, group_id: i64, identity_hash: &str) -> Result<(), StoreError> {
        self.timed("unban", async {
            let res = group_ban::Entity::delete_many()
                .filter(group_ban::Column::GroupId.eq(group_id))
                .filter(group_ban::Column::IdentityHash.eq(identity_hash))
                .exec(&self.db)
                .await?;
            if res.rows_affected == 0 {
                return Err(StoreError::NotFound { what: "ban" });
            }
            Ok(())
        })
        .await
    }

    pub async fn bans(&self, group_id: i64) -> Result<Vec<Ban>, StoreError> {
        self.timed("bans", async {
            Ok(group_ban::Entity::find().filter(group_ban::Column::GroupId.eq(group_id)).order_by_asc(group_ban::Column::Id).all(&self.db).await?)
        })
        .await
    }

    /// Every member of a group (for loading a group actor's in-memory set).
    pub async fn all_members(&self, group_id: i64) -> Result<Vec<Member>, StoreError> {
        self.timed("all_members", async {
            Ok(group_member::Entity::find().filter(group_member::Column::GroupId.eq(group_id)).order_by_asc(group_member::Column::Id).all(&self.db).await?)
        })
        .await
    }
}
