//! email-service's persistence: which confirmations went out.

use sqlx::{AnyConnection, AnyPool};

/// One sent confirmation.
#[derive(Debug)]
pub struct Sent<'a> {
    /// The order it confirms (one confirmation per order).
    pub order_id: &'a str,
    /// Where it went.
    pub recipient: &'a str,
    /// Its stable `Message-ID`.
    pub message_id: &'a str,
    /// `file` or `smtp`.
    pub transport: &'a str,
}

/// Confirmations recorded as sent.
pub async fn sent_count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM emails").fetch_one(pool).await
}

/// Which of `order_ids` have their confirmation recorded as sent, in one query.
pub async fn sent_among(
    db: &switchyard::db::Db,
    order_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT order_id FROM emails WHERE order_id IN ({})",
        switchyard::db::placeholders(1, order_ids.len())
    );
    let sql = switchyard::db::positional(db.backend(), sql);
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for id in order_ids {
        query = query.bind(*id);
    }
    Ok(query.fetch_all(db.pool()).await?.into_iter().collect())
}

/// Records a sent confirmation inside `tx`; false when the order's was recorded before.
pub async fn record_sent(tx: &mut AnyConnection, sent: &Sent<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO emails (order_id, recipient, message_id, transport, sent_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(sent.order_id)
    .bind(sent.recipient)
    .bind(sent.message_id)
    .bind(sent.transport)
    .bind(switchyard::time::now_rfc3339())
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// [`record_sent`] for several confirmations in one statement; returns the order ids recorded now
/// (not those recorded before). Each order id must appear once.
pub async fn record_all_sent(
    tx: &mut AnyConnection,
    sent: &[Sent<'_>],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if sent.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "INSERT INTO emails (order_id, recipient, message_id, transport, sent_at) VALUES {} \
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        switchyard::db::value_rows(sent.len(), 5)
    );
    let sql = switchyard::db::positional(switchyard::db::Backend::of(tx), sql);
    let sent_at = switchyard::time::now_rfc3339();
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for one in sent {
        query = query
            .bind(one.order_id)
            .bind(one.recipient)
            .bind(one.message_id)
            .bind(one.transport)
            .bind(sent_at.as_str());
    }
    Ok(query.fetch_all(&mut *tx).await?.into_iter().collect())
}
