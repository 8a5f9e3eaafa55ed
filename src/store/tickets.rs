//! Queries on `tickets`, the LXMF tickets a group handed to its members.
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use super::{Store, StoreError, Ticket, now_ms};
use entity::ticket;

impl Store {
    pub async fn insert_ticket(&self, group_id: i64, identity_hash: &str, ticket_bytes: Vec<u8>, expires_at: i64) -> Result<Ticket, StoreError> {
        self.timed("insert_ticket", async {
            Ok(ticket::ActiveModel {
                group_id: Set(group_id),
                identity_hash: Set(identity_hash.to_owned()),
                ticket: Set(ticket_bytes),
                expires_at: Set(expires_at),
                created_at: Set(now_ms()),
                ..Default::default()
            }
            .insert(&self.db)
            .await?)
        })
        .await
    }

    /// Tickets of a member that are still valid at `now`.
    pub async fn valid_tickets(&self, group_id: i64, identity_hash: &str, now: i64) -> Result<Vec<Ticket>, StoreError> {
        self.timed("valid_tickets", async {
            Ok(ticket::Entity::find()
                .filter(ticket::Column::GroupId.eq(group_id))
                .filter(ticket::Column::IdentityHash.eq(identity_hash))
                .filter(ticket::Column::ExpiresAt.gt(now))
                .all(&self.db)
                .await?)
        })
        .await
    }
}
