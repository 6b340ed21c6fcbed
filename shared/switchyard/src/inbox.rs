//! The inbox: a consumer records each event id it applied in the same transaction as the effect,
//! so a redelivered event (or a duplicate published twice) has no second effect.
//!
//! Each service that consumes events includes [`SQL`] in its migrations.

use sqlx::AnyConnection;

/// The inbox table, for SQLite and Postgres alike.
pub const SQL: &str = "CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);";

/// Records that `consumer` applies `event_id`, inside the caller's transaction. Returns false
/// when it was applied before: the caller then skips the effect and just acknowledges.
pub async fn record(conn: &mut AnyConnection, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(crate::time::now_rfc3339())
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// [`record`] for several event ids in one statement: returns the ones not applied before (an id
/// given twice counts once). Empty input writes nothing.
pub async fn record_all(
    conn: &mut AnyConnection,
    consumer: &str,
    event_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "INSERT INTO inbox (event_id, consumer, processed_at) VALUES {} \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        crate::db::value_rows(event_ids.len(), 3)
    );
    let sql = crate::db::positional(crate::db::Backend::of(conn), sql);
    let processed_at = crate::time::now_rfc3339();
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for id in event_ids {
        query = query.bind(*id).bind(consumer).bind(processed_at.as_str());
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}

/// How many events `consumer` has applied.
pub async fn count(pool: &sqlx::AnyPool, consumer: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = $1").bind(consumer).fetch_one(pool).await
}
