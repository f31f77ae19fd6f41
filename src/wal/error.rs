//! Why the log refuses a write: [`StorageError`], answered 503 `storage_unavailable`, and the
//! lasting states behind two of its kinds ([`Refusal`]).

use std::io;

/// Why records could not be made durable; answered 503 `storage_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The write failed (disk full, file size limit, I/O error).
    #[error("the address could not be written to the log: {0}")]
    Write(io::Error),
    /// A sync failed, or the segment file was removed, and the snapshot that repairs it has
    /// not succeeded yet.
    #[error("the data directory could not be synced to disk; retrying")]
    Broken,
    /// The data directory was removed or replaced while the service ran.
    #[error(
        "the data directory was removed or replaced while the service ran; nothing can be made \
         durable until it is back (restart the service to start on the directory there now)"
    )]
    Lost,
    /// Recovery at start has not finished.
    #[error("the data directory is still being read back; not ready for writes")]
    Recovering,
}

/// Why the log refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A sync failed, or the segment file was removed: a snapshot of the whole state repairs it.
    Broken,
    /// The data directory was removed or replaced: writes wait for it to be back.
    Lost,
}

impl From<Refusal> for StorageError {
    fn from(why: Refusal) -> StorageError {
        match why {
            Refusal::Broken => StorageError::Broken,
            Refusal::Lost => StorageError::Lost,
        }
    }
}
