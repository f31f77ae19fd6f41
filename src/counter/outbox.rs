//! The queue between the exact kind's log and a shared store ([`super::shared`]): what the log
//! took (addresses and their times) and the store has not been sent yet. Bounded: past
//! [`OUTBOX_MAX`] it is dropped and the whole set is to be sent instead; while the store is
//! down nothing queues, changes are only counted, since the resend after the outage sends the
//! whole set anyway.

use std::net::IpAddr;

use parking_lot::Mutex;

/// Changes queued at most (24 bytes each) while Redis takes them slower than they come; past
/// it the queue is dropped and the whole set sent again, so memory stays bounded.
const OUTBOX_MAX: usize = 1 << 20;

/// What the local log took and Redis has not yet been sent: addresses and their times.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    items: Vec<(IpAddr, u32)>,
    /// False while Redis is down: changes are only counted, since the resend after the outage
    /// sends the whole local set anyway.
    linked: bool,
    /// Changes since Redis went down, or since the queue overflowed, until the resend after
    /// it is done.
    missed: u64,
    /// The queue outgrew [`OUTBOX_MAX`] (Redis slower than ingest): the whole set is to be sent
    /// again instead.
    overflowed: bool,
}

impl Outbox {
    /// Queues `items` (address, time in seconds) for Redis.
    pub fn push(&self, items: impl IntoIterator<Item = (IpAddr, u32)>) {
        let mut pending = self.pending.lock();
        if !pending.linked {
            pending.missed += items.into_iter().count() as u64;
            return;
        }
        pending.items.extend(items);
        if pending.items.len() > OUTBOX_MAX {
            pending.missed += pending.items.len() as u64;
            pending.items = Vec::new();
            pending.overflowed = true;
        }
    }

    /// What is queued, and whether the whole set must be sent instead of just that.
    pub(super) fn take(&self) -> (Vec<(IpAddr, u32)>, bool) {
        let mut pending = self.pending.lock();
        let overflowed = std::mem::take(&mut pending.overflowed);
        (std::mem::take(&mut pending.items), overflowed)
    }

    /// Redis answers: changes queue from now on.
    pub(super) fn link(&self) {
        self.pending.lock().linked = true;
    }

    /// The whole set has been sent: nothing missed before is left out.
    pub(super) fn caught_up(&self) {
        self.pending.lock().missed = 0;
    }

    /// Redis went down: what was queued is missed too.
    pub(super) fn unlink(&self, unsent: usize) {
        let mut pending = self.pending.lock();
        pending.linked = false;
        pending.missed += (unsent + pending.items.len()) as u64;
        pending.items = Vec::new();
    }

    pub(super) fn backlog(&self) -> u64 {
        let pending = self.pending.lock();
        pending.items.len() as u64 + pending.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_counts_what_it_cannot_queue_while_redis_is_down() {
        let outbox = Outbox::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        outbox.push([(ip, 1)]);
        assert_eq!(outbox.backlog(), 1, "down from the start");
        assert!(outbox.take().0.is_empty());
        outbox.link();
        outbox.push([(ip, 2), (ip, 3)]);
        assert_eq!(outbox.backlog(), 3);
        assert_eq!(outbox.take(), (vec![(ip, 2), (ip, 3)], false));
        outbox.unlink(2);
        assert_eq!(outbox.backlog(), 3, "the missed one and the two unsent");
    }

    #[test]
    fn an_outbox_past_its_bound_asks_for_the_whole_set_instead() {
        let outbox = Outbox::default();
        outbox.link();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        outbox.push(std::iter::repeat_n((ip, 1), OUTBOX_MAX));
        assert_eq!(outbox.backlog(), OUTBOX_MAX as u64, "still queued");
        outbox.push([(ip, 2)]);
        let (items, overflowed) = outbox.take();
        assert!(items.is_empty() && overflowed, "dropped, to be sent whole");
        assert_eq!(outbox.backlog(), OUTBOX_MAX as u64 + 1, "counted as missed");
        assert_eq!(outbox.take(), (Vec::new(), false), "asked once");
    }
}
