//! The notice queue: tickets whose state an API thread changed (cancel, reprioritize), for
//! the scheduler to act on at its next step.
//!
//! Unbounded but never larger than the number of live requests: a ticket is pushed only by
//! the call that set its `NOTIFY` bit (see `ticket.rs`). Lock-free (crossbeam's `SegQueue`)
//! in normal builds; a mutex-guarded deque under loom, where crossbeam's internals are not
//! modelled.

use crate::sync::Arc;
use crate::ticket::Ticket;

pub(crate) struct NoticeQueue {
    #[cfg(not(loom))]
    queue: crossbeam_queue::SegQueue<Arc<Ticket>>,
    #[cfg(loom)]
    queue: crate::sync::Mutex<std::collections::VecDeque<Arc<Ticket>>>,
}

impl NoticeQueue {
    pub(crate) fn new() -> Self {
        Self {
            queue: Default::default(),
        }
    }

    pub(crate) fn push(&self, ticket: Arc<Ticket>) {
        #[cfg(not(loom))]
        self.queue.push(ticket);
        #[cfg(loom)]
        crate::sync::lock(&self.queue).push_back(ticket);
    }

    /// Notices queued now (a snapshot: others may be pushing).
    pub(crate) fn len(&self) -> usize {
        #[cfg(not(loom))]
        return self.queue.len();
        #[cfg(loom)]
        return crate::sync::lock(&self.queue).len();
    }

    pub(crate) fn pop(&self) -> Option<Arc<Ticket>> {
        #[cfg(not(loom))]
        return self.queue.pop();
        #[cfg(loom)]
        return crate::sync::lock(&self.queue).pop_front();
    }
}
