//! Queries of the hosting service: the server identity, the group directory, creation quotas.
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, OnConflict};
use sea_orm::{ColumnTrait, Condition, EntityTrait, FromQueryResult, Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};

use super::{NewGroup, Store, StoreError, now_ms};
use entity::group::{Column, Entity};

/// How the directory is sorted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DirectorySort {
    #[default]
    Members,
    Activity,
}

/// One page of the directory.
#[derive(Clone, Debug, Default)]
pub struct DirectoryQuery {
    pub offset: u64,
    pub limit: u64,
    pub sort: DirectorySort,
    /// Lowercase substring of the shown name; `None` matches every group.
    pub name_filter: Option<String>,
}

/// A listed group with what the directory shows of it.
#[derive(Clone, Debug, FromQueryResult)]
pub struct DirectoryRow {
    pub id: i64,
    pub public_name: String,
    pub visibility: String,
    pub group_dest_hash: String,
    pub lxmf_dest_hash: String,
    pub identity_private_key: Vec<u8>,
    pub join_stamp_cost: i32,
    pub post_stamp_cost: i32,
    pub created_at: i64,
    pub member_count: i64,
    pub last_activity_at: i64,
}

/// The name strangers see of a listed private group; the filter matches against it, never the real name.
const PRIVATE_SHOWN: &str = "private group";

/// `%`, `_` and the escape character are literal in a user's filter.
fn like_pattern(filter: &str) -> String {
    let mut p = String::from("%");
    for c in filter.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A group's last activity: its newest message's arrival, else its creation (portable SQL; the
/// subquery walks the index on group_id).
const LAST_ACTIVITY: &str = "COALESCE((SELECT x.received_at FROM group_messages x WHERE x.group_id = groups.id ORDER BY x.id DESC LIMIT 1), groups.created_at)";

impl Store {
    /// The server identity's private key, created (64 random bytes made by `generate`) on first use.
    /// Concurrent first starts agree: the insert does nothing if a row exists, and the row is read back.
    pub async fn server_identity(&self, generate: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, StoreError> {
        use entity::server_identity::{ActiveModel, Column as C, Entity as E};
        self.timed("server_identity", async {
            if let Some(row) = E::find_by_id(1).one(&self.db).await? {
                return Ok(row.private_key);
            }
            let am = ActiveModel { id: Set(1), private_key: Set(generate()), created_at: Set(now_ms()) };
            E::insert(am).on_conflict(OnConflict::column(C::Id).do_nothing().to_owned()).exec_without_returning(&self.db).await?;
            E::find_by_id(1).one(&self.db).await?.map(|r| r.private_key).ok_or(StoreError::NotFound { what: "server identity" })
        })
        .await
    }

    fn directory_condition(q: &DirectoryQuery) -> Condition {
        let public = Column::Visibility.eq("public");
        let private_listed = Condition::all().add(Column::Visibility.eq("private")).add(Column::Listed.eq(true));
        match q.name_filter.as_deref().filter(|f| !f.is_empty()) {
            None => Condition::any().add(public).add(private_listed),
            Some(f) => {
                let name_matches = Expr::expr(Func::lower(Expr::col(Column::PublicName))).like(LikeExpr::new(like_pattern(f)).escape('\\'));
                let mut c = Condition::any().add(Condition::all().add(public).add(name_matches));
                if PRIVATE_SHOWN.contains(f) {
                    c = c.add(private_listed);
                }
                c
            }
        }
    }

    /// One page of listed groups (public ones, and private ones with `listed`), with the number
    /// of matches. Member counts and the last activity come from indexed subqueries.
    pub async fn directory(&self, q: &DirectoryQuery) -> Result<(Vec<DirectoryRow>, u64), StoreError> {
        self.timed("directory", async {
            let cond = Self::directory_condition(q);
            let total = Entity::find().filter(cond.clone()).count(&self.db).await?;
            // Portable SQL (SQLite and PostgreSQL); both subqueries walk an index on group_id.
            let members = Expr::cust("(SELECT COUNT(*) FROM group_members gm WHERE gm.group_id = groups.id)");
            let activity = Expr::cust(LAST_ACTIVITY);
            let order = match q.sort {
                DirectorySort::Members => "member_count",
                DirectorySort::Activity => "last_activity_at",
            };
            let rows = Entity::find()
                .select_only()
                .columns([
                    Column::Id,
                    Column::PublicName,
                    Column::Visibility,
                    Column::GroupDestHash,
                    Column::LxmfDestHash,
                    Column::IdentityPrivateKey,
                    Column::JoinStampCost,
                    Column::PostStampCost,
                    Column::CreatedAt,
                ])
                .column_as(members, "member_count")
                .column_as(activity, "last_activity_at")
                .filter(cond)
                .order_by(Expr::cust(order), Order::Desc)
                .order_by(Column::Id, Order::Asc)
                .offset(q.offset)
                .limit(q.limit)
                .into_model::<DirectoryRow>()
                .all(&self.db)
                .await?;
            Ok((rows, total))
        })
        .await
    }

    /// Every group's id, public groups first, each part most recently active first: the order in
    /// which a new listener should hear the announces.
    pub async fn groups_by_activity(&self) -> Result<Vec<i64>, StoreError> {
        self.timed("groups_by_activity", async {
            Ok(Entity::find()
                .select_only()
                .column(Column::Id)
                .order_by(Expr::cust("CASE WHEN groups.visibility = 'public' THEN 0 ELSE 1 END"), Order::Asc)
                .order_by(Expr::cust(LAST_ACTIVITY), Order::Desc)
                .order_by(Column::Id, Order::Asc)
                .into_tuple::<i64>()
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn count_public_groups(&self) -> Result<u64, StoreError> {
        self.timed("count_public_groups", async { Ok(Entity::find().filter(Column::Visibility.eq("public")).count(&self.db).await?) }).await
    }

    /// Groups whose founder is `identity_hash` now (the per-identity quota).
    pub async fn count_groups_founded_by(&self, identity_hash: &str) -> Result<u64, StoreError> {
        self.timed("count_groups_founded_by", async { Ok(Entity::find().filter(Column::FounderIdentityHash.eq(identity_hash)).count(&self.db).await?) }).await
    }

    /// Inserts many groups in one transaction (seeding and benchmarks), without members or events.
    pub async fn insert_groups(&self, groups: Vec<NewGroup>) -> Result<(), StoreError> {
        self.timed("insert_groups", async {
            let now = now_ms();
            let tx = self.db.begin().await?;
            for chunk in groups.chunks(500) {
                let models = chunk.iter().cloned().map(|new| new.into_active(now));
                Entity::insert_many(models).exec_without_returning(&tx).await.map_err(|e| StoreError::conflict_or_db(e, "group"))?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn filters_are_literal() {
        assert_eq!(like_pattern("a%b_c"), "%a\\%b\\_c%");
    }
}
