//! The command-line tools: [`count`] takes the service's path without HTTP, reading log files
//! ([`logfile`]) through [`crate::batch`] into a [`crate::store::Store`]; [`send`] reads them the
//! same way and posts them in batches to a running service.

pub mod count;
pub mod logfile;
pub mod send;
