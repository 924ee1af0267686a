//! Group commit: concurrent writes share one transaction, and so one WAL flush.
//!
//! Items queue on a channel; a few tasks each take whatever is waiting (up to a batch), commit it in one
//! transaction and answer every item afterwards. An answer still means committed. Without a linger
//! nothing waits for a batch to fill: an idle server commits a lone item at once, a busy one commits many
//! per flush. With one ([`Linger`]), a task that found too few waiting keeps collecting for a while
//! first: fewer, larger statements.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::StoreError;

/// Items waiting for a task before submitters themselves wait (back-pressure).
const QUEUE: usize = 4096;

/// Commits a batch on a pool `P` (PostgreSQL's, or SQLite's writer); returns one output per item, in
/// order.
pub(crate) type CommitFn<P, T, O> = Arc<
    dyn Fn(P, Vec<T>) -> Pin<Box<dyn Future<Output = Result<Vec<O>, StoreError>> + Send>>
        + Send
        + Sync,
>;

/// How a task that emptied the queue waits for more before it commits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    /// The longest wait; zero commits at once.
    pub wait: Duration,
    /// A batch this large is committed without waiting.
    pub enough: usize,
    /// Wait only while items come in a stream (the previous batch held more than one). A caller that
    /// sends one item at a time and waits for each answer gets no batch by waiting, only a delay.
    pub streams_only: bool,
}

struct Pending<T, O> {
    item: T,
    reply: oneshot::Sender<Result<O, StoreError>>,
}

/// The submitting side; the tasks run until it is dropped.
pub(crate) struct Batcher<T, O> {
    sender: mpsc::Sender<Pending<T, O>>,
}

impl<T: Send + 'static, O: Send + 'static> Batcher<T, O> {
    /// Starts `tasks` committing tasks in `runtime`, each committing at most `max_batch` items at once,
    /// after collecting as `linger` says.
    pub(crate) fn start<P: Clone + Send + Sync + 'static>(
        runtime: &tokio::runtime::Handle,
        pool: P,
        tasks: usize,
        max_batch: usize,
        linger: Linger,
        commit: CommitFn<P, T, O>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let last_batch = Arc::new(AtomicUsize::new(0));
        for _ in 0..tasks.max(1) {
            runtime.spawn(run(
                pool.clone(),
                receiver.clone(),
                last_batch.clone(),
                max_batch.max(1),
                linger,
                commit.clone(),
            ));
        }
        Self { sender }
    }

    /// Submits one item and waits until its batch is committed (or failed).
    pub(crate) async fn submit(&self, item: T) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { item, reply })
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?
    }
}

async fn run<P: Clone, T, O>(
    pool: P,
    receiver: Arc<Mutex<mpsc::Receiver<Pending<T, O>>>>,
    last_batch: Arc<AtomicUsize>,
    max_batch: usize,
    linger: Linger,
    commit: CommitFn<P, T, O>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(pending) => batch.push(pending),
                None => return,
            }
            let waits = !linger.wait.is_zero()
                && (!linger.streams_only || last_batch.load(Ordering::Relaxed) > 1);
            let deadline = tokio::time::Instant::now() + linger.wait;
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) if !waits || batch.len() >= linger.enough => break,
                    // Closed, or the linger is over: commit what there is.
                    Err(_) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(pending)) => batch.push(pending),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        }
        last_batch.store(batch.len(), Ordering::Relaxed);
        let (items, replies): (Vec<T>, Vec<_>) = batch
            .into_iter()
            .map(|pending| (pending.item, pending.reply))
            .unzip();
        match commit(pool.clone(), items).await {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(error) => {
                // Nothing of the batch was committed: every item gets the error.
                for reply in replies {
                    let _ = reply.send(Err(error.replicate()));
                }
            }
        }
    }
}
