//! Queries on `groups`.
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::{Group, Store, StoreError, now_ms};
use entity::group::{ActiveModel, Column, Entity};

/// A new group takes attachments of at most this many bytes in all (the migration's default too):
/// a photo thumbnail or a short voice note, not a file that holds a LoRa channel for an hour.
pub const DEFAULT_ATTACHMENT_MAX_BYTES: i64 = 32 * 1024;
/// A new group allows images, files and audio (bits 1, 2, 4), within the size.
pub const DEFAULT_ATTACHMENT_KINDS: i32 = 7;

/// What a new group is made of; the caller has already generated its identity.
#[derive(Clone, Debug)]
pub struct NewGroup {
    pub identity_hash: String,
    pub identity_private_key: Vec<u8>,
    pub group_dest_hash: String,
    pub lxmf_dest_hash: String,
    pub public_name: String,
    pub private_name: Option<String>,
    pub visibility: String,
    pub join_stamp_cost: i32,
    pub post_stamp_cost: i32,
    pub history_public: bool,
    pub listed: bool,
    pub founder_identity_hash: Option<String>,
}

impl NewGroup {
    /// The row to insert, stamped with `now`.
    pub(super) fn into_active(self, now: i64) -> ActiveModel {
        ActiveModel {
            identity_hash: Set(self.identity_hash),
            identity_private_key: Set(self.identity_private_key),
            group_dest_hash: Set(self.group_dest_hash),
            lxmf_dest_hash: Set(self.lxmf_dest_hash),
            public_name: Set(self.public_name),
            private_name: Set(self.private_name),
            visibility: Set(self.visibility),
            join_stamp_cost: Set(self.join_stamp_cost),
            post_stamp_cost: Set(self.post_stamp_cost),
            history_public: Set(self.history_public),
            listed: Set(self.listed),
            founder_identity_hash: Set(self.founder_identity_hash),
            created_at: Set(now),
            updated_at: Set(now),
            // Set here, not left to the column defaults: the returned row must hold every column.
            attachment_max_bytes: Set(DEFAULT_ATTACHMENT_MAX_BYTES),
            attachment_kinds: Set(DEFAULT_ATTACHMENT_KINDS),
            ..Default::default()
        }
    }
}

/// A partial update of a group's settings; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct GroupPatch {
    pub public_name: Option<String>,
    pub private_name: Option<Option<String>>,
    pub visibility: Option<String>,
    pub join_stamp_cost: Option<i32>,
    pub post_stamp_cost: Option<i32>,
    pub history_public: Option<bool>,
    pub listed: Option<bool>,
    pub founder_identity_hash: Option<Option<String>>,
    pub attachment_max_bytes: Option<i64>,
    pub attachment_kinds: Option<i32>,
}

impl Store {
    /// Inserts a group; a clash on any of its hashes is `Conflict`.
    pub async fn create_group(&self, new: NewGroup) -> Result<Group, StoreError> {
        self.timed("create_group", async {
            let am = new.into_active(now_ms());
            am.insert(&self.db).await.map_err(|e| StoreError::conflict_or_db(e, "group"))
        })
        .await
    }

    /// Every group, oldest first.
    pub async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.timed("list_groups", async { Ok(Entity::find().order_by_asc(Column::Id).all(&self.db).await?) }).await
    }

    /// Groups changed after `since_ms`, so a running server can pick up CLI edits.
    pub async fn groups_updated_since(&self, since_ms: i64) -> Result<Vec<Group>, StoreError> {
        self.timed("groups_updated_since", async { Ok(Entity::find().filter(Column::UpdatedAt.gt(since_ms)).all(&self.db).await?) }).await
    }

    /// `(id, updated_at)` of every group: the cheap poll a running server uses to notice changes.
    pub async fn group_versions(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        self.timed("group_versions", async {
            Ok(Entity::find()
                .select_only()
                .column(Column::Id)
                .column(Column::UpdatedAt)
                .order_by_asc(Column::Id)
                .into_tuple::<(i64, i64)>()
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn count_groups(&self) -> Result<u64, StoreError> {
        self.timed("count_groups", async { Ok(Entity::find().count(&self.db).await?) }).await
    }

    pub async fn group_by_id(&self, id: i64) -> Result<Group, StoreError> {
        self.timed("group_by_id", async { Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound { what: "group" }) }).await
    }

    /// Looks a group up by its identity hash or either destination hash (lowercase hex).
    pub async fn group_by_hash(&self, hash: &str) -> Result<Group, StoreError> {
        self.timed("group_by_hash", async {
            Entity::find()
                .filter(Condition::any().add(Column::IdentityHash.eq(hash)).add(Column::GroupDestHash.eq(hash)).add(Column::LxmfDestHash.eq(hash)))
                .one(&self.db)
                .await?
                .ok_or(StoreError::NotFound { what: "group" })
        })
        .await
    }

    /// Applies a patch and bumps `updated_at`, which is how a running server notices the change.
    pub async fn update_group(&self, id: i64, patch: GroupPatch) -> Result<Group, StoreError> {
        self.timed("update_group", async {
            let current = Entity::find_by_id(id).one(&self.db).await?.ok_or(StoreError::NotFound { what: "group" })?;
            let mut am: ActiveModel = current.into();
            if let Some(v) = patch.public_name {
                am.public_name = Set(v);
            }
            if let Some(v) = patch.private_name {
                am.private_name = Set(v);
            }
            if let Some(v) = patch.visibility {
                am.visibility = Set(v);
            }
            if let Some(v) = patch.join_stamp_cost {
                am.join_stamp_cost = Set(v);
            }
            if let Some(v) = patch.post_stamp_cost {
                am.post_stamp_cost = Set(v);
            }
            if let Some(v) = patch.history_public {
                am.history_public = Set(v);
            }
            if let Some(v) = patch.listed {
                am.listed = Set(v);
            }
            if let Some(v) = patch.founder_identity_hash {
                am.founder_identity_hash = Set(v);
            }
            if let Some(v) = patch.attachment_max_bytes {
                am.attachment_max_bytes = Set(v);
            }
            if let Some(v) = patch.attachment_kinds {
                am.attachment_kinds = Set(v);
            }
            am.updated_at = Set(now_ms());
            Ok(am.update(&self.db).await?)
        })
        .await
    }

    /// Deletes a group; its members, bans, requests, history, events, tickets and outbox go with it.
    pub async fn delete_group(&self, id: i64) -> Result<(), StoreError> {
        self.timed("delete_group", async {
            let res = Entity::delete_by_id(id).exec(&self.db).await?;
            if res.rows_affected == 0 {
                return Err(StoreError::NotFound { what: "group" });
            }
            Ok(())
        })
        .await
    }
}
