//! Migrations of several instances starting at once on one Postgres database: sqlx's migrator
//! holds Postgres' advisory lock, so each migration runs exactly once and every instance starts.

use switchyard::db::Db;
use switchyard::testkit::TestDatabase;

use crate::helpers::MIGRATIONS;

#[tokio::test]
async fn four_instances_migrating_one_postgres_database_at_once_all_start_and_migrate_once() {
    let test_db = TestDatabase::postgres().await;
    let url = test_db.url().to_string();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Db::connect(&url, &MIGRATIONS).await })
        })
        .collect();
    let mut pools = Vec::new();
    for start in starts {
        pools.push(start.await.expect("task").expect("every instance starts"));
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pools[0].pool())
        .await
        .expect("migrations table");
    assert_eq!(applied, vec![1, 2], "each migration applied once");
    // The tables work from every pool.
    for db in &pools {
        assert_eq!(switchyard::outbox::pending(db).await.expect("outbox"), 0);
        db.close().await;
    }
}
