//! Group commit of synchronous writes, on a real SQLite file and a real Postgres database.

use sqlx::AnyConnection;
use switchyard::db::{Db, Migration, Migrations};
use switchyard::group_commit::{GroupCommit, GroupCommitError, GroupWrite, WriteFuture};
use switchyard::testkit::TestDatabase;

const TABLE: &[Migration] =
    &[Migration { version: 1, description: "names", sql: "CREATE TABLE names (name TEXT PRIMARY KEY)" }];

/// Inserts names with one statement per batch; a name already there is an output (`false`), a
/// name "poison" fails the whole batch.
struct Names;

impl GroupWrite for Names {
    type Op = String;
    type Output = bool;

    fn write_all<'a>(&'a self, tx: &'a mut AnyConnection, names: &'a [String]) -> WriteFuture<'a, bool> {
        Box::pin(async move {
            if names.iter().any(|n| n == "poison") {
                return Err(sqlx::Error::Protocol("poison".into()));
            }
            let rows = switchyard::db::value_rows(names.len(), 1);
            let sql = switchyard::db::positional(
                switchyard::db::Backend::of(tx),
                format!("INSERT INTO names (name) VALUES {rows} ON CONFLICT DO NOTHING RETURNING name"),
            );
            let mut insert = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for name in names {
                insert = insert.bind(name.as_str());
            }
            let inserted = insert.fetch_all(&mut *tx).await?;
            Ok(names.iter().map(|n| inserted.contains(n)).collect())
        })
    }
}

async fn connect(test_db: &TestDatabase) -> Db {
    Db::connect(test_db.url(), &Migrations { sqlite: TABLE, postgres: TABLE }).await.expect("database")
}

async fn count(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM names").fetch_one(db.pool()).await.expect("count")
}

async fn batches(db: &Db) -> (usize, usize) {
    let names = GroupCommit::start(db.clone(), "names", Names, 16);
    let writes: Vec<_> = (0..200)
        .map(|i| {
            let names = names.clone();
            tokio::spawn(async move { names.write(format!("n{}", i % 100)).await })
        })
        .collect();
    let mut inserted = 0;
    let mut found = 0;
    for write in writes {
        if write.await.expect("task").expect("write") {
            inserted += 1;
        } else {
            found += 1;
        }
    }
    (inserted, found)
}

async fn each_caller_gets_its_own_output(test_db: TestDatabase) {
    let db = connect(&test_db).await;
    // Each name is written twice, concurrently: once inserted, once found there (in the same
    // batch or a later one).
    assert_eq!(batches(&db).await, (100, 100));
    assert_eq!(count(&db).await, 100);
}

#[tokio::test]
async fn concurrent_writes_each_get_their_own_output_on_sqlite() {
    each_caller_gets_its_own_output(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn concurrent_writes_each_get_their_own_output_on_postgres() {
    each_caller_gets_its_own_output(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn a_failed_batch_fails_all_its_callers_and_the_writer_goes_on() {
    let test_db = TestDatabase::sqlite();
    let db = connect(&test_db).await;
    let names = GroupCommit::start(db.clone(), "names", Names, 16);
    let write = |name: &str| {
        let names = names.clone();
        let name = name.to_string();
        tokio::spawn(async move { names.write(name).await })
    };
    // On this test's one-thread runtime the three tasks queue their writes before the writer
    // runs again, so they make one batch, and "poison" fails the other two with it.
    let batch = [write("first"), write("poison"), write("bystander")];
    for write in batch {
        let err = write.await.expect("task").expect_err("the poisoned batch fails");
        assert!(matches!(err, GroupCommitError::Failed(_)), "{err}");
    }
    assert!(names.write("after".to_string()).await.expect("the next batch commits"));
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM names ORDER BY name").fetch_all(db.pool()).await.expect("names");
    assert_eq!(names, ["after"]);
}
