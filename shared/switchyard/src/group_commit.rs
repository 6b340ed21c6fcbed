//! Group commit for a service's synchronous writes: the writes that concurrent requests ask for
//! are committed together, several in one transaction, by one task.
//!
//! On SQLite every transaction costs a `BEGIN IMMEDIATE`, a `COMMIT` (a write to the WAL) and a
//! round trip to the connection's thread per statement, and writers queue for the one write slot
//! one after another. A [`GroupCommit`] takes every write waiting when the slot is free (up to
//! its batch size) and hands them to the service's [`GroupWrite::write_all`], which writes them
//! in one transaction, ideally with one statement per table: under load the cost of a
//! transaction is shared by the batch, and alone a write goes through at once (a batch of one:
//! the writer never waits for company).
//!
//! Each caller gets its own write's output, or, when the transaction fails, the error (every
//! write of that batch is rolled back with it). A caller that gives up while its write waits
//! (its request was cancelled) does not take the write back: it is committed with its batch,
//! as a write whose transaction had already begun would be.
//!
//! ```no_run
//! # async fn example(db: switchyard::db::Db) -> Result<(), switchyard::group_commit::GroupCommitError> {
//! use switchyard::group_commit::{GroupCommit, GroupWrite, WriteFuture};
//!
//! /// Greetings, one row each, written by one multi-row insert per batch.
//! struct Greetings;
//!
//! impl GroupWrite for Greetings {
//!     type Op = String;
//!     type Output = ();
//!
//!     fn write_all<'a>(&'a self, tx: &'a mut sqlx::AnyConnection, names: &'a [String]) -> WriteFuture<'a, ()> {
//!         Box::pin(async move {
//!             let rows = switchyard::db::value_rows(names.len(), 1);
//!             // Bare `?` parameters on SQLite: they bind in linear time.
//!             let sql = switchyard::db::positional(
//!                 switchyard::db::Backend::of(tx),
//!                 format!("INSERT INTO greetings (name) VALUES {rows}"),
//!             );
//!             let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
//!             for name in names {
//!                 insert = insert.bind(name.as_str());
//!             }
//!             insert.execute(tx).await?;
//!             Ok(vec![(); names.len()])
//!         })
//!     }
//! }
//!
//! let greetings = GroupCommit::start(db, "greetings", Greetings, 64);
//! greetings.write("Ada".to_string()).await?;
//! # Ok(())
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::db::Db;
use crate::observe::GROUP_COMMIT_BATCH;

/// What [`GroupWrite::write_all`] returns: one output per write, in the sequence given.
pub type WriteFuture<'a, T> =
    Pin<Box<dyn std::future::Future<Output = Result<Vec<T>, sqlx::Error>> + Send + 'a>>;

/// How a service writes a batch of its writes in one transaction.
pub trait GroupWrite: Send + Sync + 'static {
    /// One caller's write.
    type Op: Send + Sync + 'static;
    /// What that caller learns once the batch committed.
    type Output: Send + 'static;

    /// Writes every op inside `tx` and returns one output per op, in the same sequence. On `Err`
    /// the transaction is rolled back and every caller of the batch gets the error, so an op
    /// that may be refused on its own (a duplicate key) should be an output (`ON CONFLICT DO
    /// NOTHING` and an output saying so), not an error.
    fn write_all<'a>(
        &'a self,
        tx: &'a mut AnyConnection,
        ops: &'a [Self::Op],
    ) -> WriteFuture<'a, Self::Output>;
}

/// Why a write did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupCommitError {
    /// The batch's transaction failed; none of its writes committed.
    #[error("the batch's transaction failed: {0}")]
    Failed(Arc<sqlx::Error>),
    /// The writer returned a different number of outputs than it was given writes (a bug in
    /// its [`GroupWrite::write_all`]); the batch was rolled back.
    #[error("the writer returned {outputs} outputs for {ops} writes")]
    Mismatch {
        /// Writes in the batch.
        ops: usize,
        /// Outputs returned.
        outputs: usize,
    },
    /// The writer's task has stopped (the service is shutting down).
    #[error("the writer has stopped")]
    Stopped,
}

type Reply<W> = oneshot::Sender<Result<<W as GroupWrite>::Output, GroupCommitError>>;

struct Pending<W: GroupWrite> {
    op: W::Op,
    reply: Reply<W>,
}

/// The queue of one kind of write and the task that commits it in batches. Cloning shares the
/// queue; the task ends, after the writes already queued, when the last clone is dropped.
pub struct GroupCommit<W: GroupWrite> {
    queue: mpsc::Sender<Pending<W>>,
}

impl<W: GroupWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        GroupCommit { queue: self.queue.clone() }
    }
}

impl<W: GroupWrite> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("queued", &self.queued()).finish()
    }
}

impl<W: GroupWrite> GroupCommit<W> {
    /// Starts the task that commits `writer`'s writes on `db`, up to `max_batch` per
    /// transaction. `name` labels its batch-size metric. Must be called inside a Tokio runtime.
    pub fn start(db: Db, name: &'static str, writer: W, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (queue, receiver) = mpsc::channel(max_batch * 4);
        tokio::spawn(run(db, name, writer, receiver, max_batch));
        GroupCommit { queue }
    }

    /// Writes waiting for the writer (not counting the batch it is committing).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues `op` and waits until its batch committed.
    pub async fn write(&self, op: W::Op) -> Result<W::Output, GroupCommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { op, reply }).await.map_err(|_| GroupCommitError::Stopped)?;
        answer.await.map_err(|_| GroupCommitError::Stopped)?
    }
}

async fn run<W: GroupWrite>(
    db: Db,
    name: &'static str,
    writer: W,
    mut receiver: mpsc::Receiver<Pending<W>>,
    max_batch: usize,
) {
    let batch_size = metrics::histogram!(GROUP_COMMIT_BATCH, "writer" => name);
    let mut pending = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut pending, max_batch).await > 0 {
        batch_size.record(pending.len() as f64);
        let (ops, replies): (Vec<W::Op>, Vec<Reply<W>>) = pending.drain(..).map(|p| (p.op, p.reply)).unzip();
        match commit(&db, &writer, &ops).await {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    // A caller that gave up has dropped its receiver; its write stands.
                    let _ = reply.send(Ok(output));
                }
            }
            Err(err) => {
                tracing::warn!(writer = name, writes = ops.len(), error = %err, "a group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

async fn commit<W: GroupWrite>(
    db: &Db,
    writer: &W,
    ops: &[W::Op],
) -> Result<Vec<W::Output>, GroupCommitError> {
    let failed = |err: sqlx::Error| GroupCommitError::Failed(Arc::new(err));
    let mut tx = db.begin_write().await.map_err(failed)?;
    let outputs = writer.write_all(&mut tx, ops).await.map_err(failed)?;
    if outputs.len() != ops.len() {
        return Err(GroupCommitError::Mismatch { ops: ops.len(), outputs: outputs.len() });
    }
    tx.commit().await.map_err(failed)?;
    Ok(outputs)
}
