//! [`Workers`]: the threads that serve connections.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// A connection's work, to run on a worker's runtime.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that serve connections, each with a single-threaded runtime; the thread that
/// starts them is one of them. A connection stays on the thread it is handed to, so serving its
/// requests takes no cross-thread wake-ups (docs/DESIGN.md, "A runtime per core"). Connections
/// are dealt round-robin; the one listener per port stays, so no second process can join it as
/// `SO_REUSEPORT` would allow.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// This thread and `threads - 1` more.
    pub fn start(threads: usize) -> io::Result<Workers> {
        let mut queues = Vec::new();
        for n in 1..threads {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("ip-counter-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            job();
                        }
                    });
                })?;
            queues.push(tx);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `job` on the next thread in turn: here, or on a worker.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % (self.queues.len() + 1);
        match turn.checked_sub(1).map(|i| &self.queues[i]) {
            // A worker that is gone has panicked; its turn falls to this thread.
            Some(queue) => {
                if let Err(mpsc::error::SendError(job)) = queue.send(Box::new(job)) {
                    job();
                }
            }
            None => job(),
        }
    }
}
