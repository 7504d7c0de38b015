//! The wait queue's invariant check ([`Tiers::check`]): run by tests and by
//! `Scheduler::check_invariants`, never on the hot path.

use super::*;

impl Tiers {
    /// Checks the structure's invariants (tests and debug builds): nothing is pending (see
    /// [`Tiers::append_new`]), lengths agree, lists are
    /// sorted and linked both ways, every entry's place names its bucket and lane, the
    /// bucket index names exactly the lanes holding each bucket, the fair order holds
    /// exactly the non-empty lanes, and no entry is due more than its tier's lead after its
    /// arrival or arrived before the arrival floor.
    pub(crate) fn check(&self, slab: &Slab) -> Result<(), String> {
        if self.classes.iter().any(|cq| !cq.pending.is_empty()) {
            return Err("requests pending outside the lanes between steps".into());
        }
        let mut total = 0;
        let mut by_base = [0usize; MAX_CLASSES];
        for (c, cq) in self.classes.iter().enumerate() {
            let mut class_total = 0;
            for (slot, lane) in cq.lanes.iter().enumerate() {
                if self.fair.is_none() && slot > 0 && lane.len > 0 {
                    return Err(format!("class {c}: lane {slot} used with fairness off"));
                }
                let mut lane_total = 0;
                for (i, (b, bucket)) in lane.buckets.iter().enumerate() {
                    let b = *b;
                    if i > 0 && lane.buckets[i - 1].0 >= b {
                        return Err(format!("class {c} lane {slot}: buckets out of order"));
                    }
                    if (i == 0 && lane.first != b)
                        || (i + 1 == lane.buckets.len() && lane.last != b)
                    {
                        return Err(format!("class {c} lane {slot}: first or last stale"));
                    }
                    if !cq
                        .find_bucket(b)
                        .is_ok_and(|i| cq.buckets[i].1.slots.contains(&(slot as u32)))
                    {
                        return Err(format!("class {c} lane {slot}: bucket {b} not indexed"));
                    }
                    let n = check_bucket(self, slab, c, slot, b, bucket, &mut by_base)?;
                    lane_total += n as usize;
                }
                if self.fair.is_some()
                    && cq.heads.get(slot).copied() != Some(lane.head(slab).unwrap_or(NIL))
                {
                    return Err(format!("class {c} lane {slot}: head copy stale"));
                }
                if let Some(head) = cq.oldest_heads_miss(slab, slot) {
                    return Err(format!(
                        "class {c} lane {slot}: head {head} missing from the oldest heads"
                    ));
                }
                if lane_total != lane.len {
                    return Err(format!(
                        "class {c} lane {slot}: len {} but {lane_total} entries",
                        lane.len
                    ));
                }
                class_total += lane_total;
            }
            let dead = cq.buckets.iter().filter(|(_, l)| l.live == 0).count();
            if dead != cq.dead
                || cq.buckets.front().is_some_and(|(_, l)| l.live == 0)
                || cq.buckets.back().is_some_and(|(_, l)| l.live == 0)
                || dead > cq.buckets.len() - dead + 8
            {
                return Err(format!(
                    "class {c}: dead bucket entries misplaced or uncounted"
                ));
            }
            for (i, (b, lanes)) in cq.buckets.iter().enumerate() {
                if i > 0 && cq.buckets[i - 1].0 >= *b {
                    return Err(format!("class {c}: bucket index out of order"));
                }
                if lanes.live == 0 {
                    if !lanes.slots.is_empty() || cq.lanes.iter().any(|l| l.get(*b).is_some()) {
                        return Err(format!("class {c}: dead bucket {b} still held"));
                    }
                    continue;
                }
                let mut holding: Vec<u32> = lanes
                    .slots
                    .iter()
                    .copied()
                    .filter(|&s| {
                        cq.lanes
                            .get(s as usize)
                            .is_some_and(|l| l.get(*b).is_some())
                    })
                    .collect();
                holding.sort_unstable();
                holding.dedup();
                if holding.len() != lanes.live as usize || lanes.live == 0 {
                    return Err(format!(
                        "class {c}: bucket {b} counts {} lanes but {} hold it",
                        lanes.live,
                        holding.len()
                    ));
                }
            }
            if class_total != cq.len {
                return Err(format!(
                    "class {c}: len {} but {class_total} entries",
                    cq.len
                ));
            }
            if let Some(f) = &self.fair {
                f.check(
                    c,
                    |s| cq.lanes.get(s as usize).is_some_and(|l| l.len > 0),
                    cq.lanes.len() as u32,
                )?;
            }
            total += class_total;
        }
        if total != self.len || by_base != self.by_base {
            return Err(format!("queue len {} but {total} entries", self.len));
        }
        Ok(())
    }
}

fn check_bucket(
    q: &Tiers,
    slab: &Slab,
    c: usize,
    slot: usize,
    b: u64,
    bucket: &Bucket,
    by_base: &mut [usize; MAX_CLASSES],
) -> Result<u32, String> {
    let mut n = 0;
    for (r, run) in bucket.runs() {
        let base = r % MAX_CLASSES;
        let mut prev = NIL;
        let mut count = 0;
        for k in run.keys(slab) {
            let e = &slab[k];
            if e.prev != prev {
                return Err(format!("class {c} bucket {b}: broken back link at {k}"));
            }
            if prev != NIL && slab[prev].order_key() > e.order_key() {
                return Err(format!("class {c} bucket {b}: run out of order at {k}"));
            }
            if e.place != Place::Waiting
                || e.pending
                || q.bucket_of(e.due) != b
                || run_of(e) != r
                || e.tenant as usize != slot
            {
                return Err(format!("class {c} bucket {b}: entry {k} misplaced"));
            }
            if e.relegated != (c >= q.live)
                || (c >= q.live && c - q.live != base)
                || (c < q.live && c > base)
            {
                return Err(format!("entry {k} sits in tier {c}, not its class's"));
            }
            if e.relegated && e.due != e.arrival {
                return Err(format!("relegated entry {k} is not queued by arrival"));
            }
            if e.due.0 > e.arrival.0.saturating_add(q.leads[c]) || e.arrival.0 < q.arrival_floor {
                return Err(format!(
                    "entry {k} due past its tier's lead, or arrived below the arrival floor"
                ));
            }
            prev = k;
            count += 1;
        }
        if count != run.len || run.tail != prev {
            return Err(format!(
                "class {c} bucket {b} run {base}: length or tail wrong"
            ));
        }
        by_base[base] += count as usize;
        n += count;
    }
    if n != bucket.len || n == 0 {
        return Err(format!(
            "class {c} bucket {b}: len {} but {n} entries",
            bucket.len
        ));
    }
    Ok(n)
}

pub(super) fn contains(list: &List, slab: &Slab, key: u32) -> bool {
    // Walk back from `key` to the list head: O(position); a debug check that the run found
    // by (bucket, base) really holds the entry.
    let mut k = key;
    while slab[k].prev != NIL {
        k = slab[k].prev;
    }
    k == list.head
}
