//! The notice queue: handles of requests whose state word an API thread changed (cancel,
//! reprioritize), for the scheduler to act on at its next step.
//!
//! Unbounded but never larger than twice the number of live requests: a handle is pushed
//! only by the call that set its slot's `NOTIFY` bit (see `table.rs`), and the scheduler
//! clears the bit when it drains the request or pops the notice. Lock-free (crossbeam's `SegQueue`)
//! in normal builds; a mutex-guarded deque under loom, where crossbeam's internals are not
//! modelled.

use crate::ingress::table::RequestHandle;

pub(crate) struct NoticeQueue {
    #[cfg(not(loom))]
    queue: crossbeam_queue::SegQueue<RequestHandle>,
    #[cfg(loom)]
    queue: crate::sync::Mutex<std::collections::VecDeque<RequestHandle>>,
}

impl NoticeQueue {
    pub(crate) fn new() -> Self {
        Self {
            queue: Default::default(),
        }
    }

    pub(crate) fn push(&self, handle: RequestHandle) {
        #[cfg(not(loom))]
        self.queue.push(handle);
        #[cfg(loom)]
        crate::sync::lock(&self.queue).push_back(handle);
    }

    /// Notices queued now (a snapshot: others may be pushing).
    pub(crate) fn len(&self) -> usize {
        #[cfg(not(loom))]
        return self.queue.len();
        #[cfg(loom)]
        return crate::sync::lock(&self.queue).len();
    }

    pub(crate) fn pop(&self) -> Option<RequestHandle> {
        #[cfg(not(loom))]
        return self.queue.pop();
        #[cfg(loom)]
        return crate::sync::lock(&self.queue).pop_front();
    }
}
