//! The command-line tools: [`count`] counts log files ([`logfile`]) through [`crate::batch`]
//! into a [`crate::counter::Counter`], the service's path without HTTP; [`send`] reads them the
//! same way and posts them in batches to a running service; [`data_dir`] verifies or repairs a
//! data directory offline.

pub mod count;
pub mod data_dir;
pub mod logfile;
pub mod send;
