//! Group commit: many tasks' writes in one transaction. Each task queues its item and waits;
//! whoever finds no batch being written writes everything queued so far and answers each item.
//! A quiet worker writes batches of one at no extra latency; a busy one pays one transaction
//! (and the same few multi-row statements) for everything that arrived during the previous
//! commit. Used for TokenExpiring events and for successful refreshes, the two writes every
//! refresh makes.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

pub struct GroupCommit<T, R> {
    queue: Mutex<Vec<(T, oneshot::Sender<R>)>>,
    writer: tokio::sync::Mutex<()>,
}

impl<T, R> Default for GroupCommit<T, R> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            writer: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T, R> GroupCommit<T, R> {
    /// Queues `item` and returns its result once a batch holding it is written by `write`,
    /// which answers a batch's items in their order. `None` if the task writing the batch died
    /// before answering (a panic).
    pub async fn submit<F, Fut>(&self, item: T, write: F) -> Option<R>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let (reply, mut result) = oneshot::channel();
        self.lock_queue().push((item, reply));
        let writer = self.writer.lock().await;
        // The batch written while this one waited may have held it.
        if let Ok(result) = result.try_recv() {
            return Some(result);
        }
        let (items, replies): (Vec<T>, Vec<_>) = std::mem::take(&mut *self.lock_queue()).into_iter().unzip();
        if !items.is_empty() {
            for (reply, answer) in replies.into_iter().zip(write(items).await) {
                let _ = reply.send(answer);
            }
        }
        drop(writer);
        result.await.ok()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<(T, oneshot::Sender<R>)>> {
        // A panic while holding this lock leaves a Vec that is still valid.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::GroupCommit;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_gets_its_own_answer_and_concurrent_items_share_batches() {
        let group: Arc<GroupCommit<u32, u32>> = Arc::default();
        let batches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200u32)
            .map(|n| {
                let (group, batches) = (group.clone(), batches.clone());
                tokio::spawn(async move {
                    let write = |items: Vec<u32>| async move {
                        batches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        items.into_iter().map(|item| item * 10).collect()
                    };
                    group.submit(n, write).await
                })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.ok().flatten(), Some(n as u32 * 10));
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 200, "200 concurrent items took {batches} batches");
    }
}
