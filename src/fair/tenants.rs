//! The tenants the scheduler holds: each gets a dense slot (the wait queue's lanes and the
//! fair counters are indexed by it) while it has a request waiting or running, up to
//! [`super::FairnessConfig::max_tenants`]. Scheduler thread only.

use super::FairnessConfig;
use crate::hash::FastMap;
use crate::request::TenantId;

/// A slot in use.
struct Held {
    tenant: Option<TenantId>,
    weight: f64,
    /// Requests of this tenant the scheduler holds (waiting, in hand or running); the slot
    /// is freed when it reaches 0.
    requests: u32,
}

/// The registry.
pub(crate) struct Tenants {
    /// The slot of every held tenant (`None`: the requests that carry no tenant).
    slots: FastMap<Option<TenantId>, u32>,
    /// `held[s]` describes slot `s`; `None` when the slot is free (then it is in `free`).
    held: Vec<Option<Held>>,
    /// Free slots, reused before new ones are made.
    free: Vec<u32>,
    /// Configured weights by tenant id.
    weights: FastMap<u64, f64>,
    default_weight: f64,
    max: usize,
}

/// A tenant past the limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Full;

impl Tenants {
    /// The registry for `config` (a reload builds a new one and re-registers the held
    /// requests with [`Tenants::acquire_held`]). Its maps hold at most `max_tenants`
    /// entries, so ids a client picks to collide cost at most that bound per look-up.
    pub(crate) fn new(config: &FairnessConfig) -> Self {
        Tenants {
            slots: FastMap::default(),
            held: Vec::new(),
            free: Vec::new(),
            weights: config.tenants.iter().map(|t| (t.id, t.weight)).collect(),
            default_weight: config.default_weight,
            max: config.max_tenants,
        }
    }

    fn weight_of(weights: &FastMap<u64, f64>, default: f64, t: Option<TenantId>) -> f64 {
        t.and_then(|t| weights.get(&t.0).copied())
            .unwrap_or(default)
    }

    /// The slot for one more request of `tenant`, and whether the slot is new to it (its
    /// counters must start afresh). `Full` when the tenant is new and the limit is reached.
    pub(crate) fn acquire(&mut self, tenant: Option<TenantId>) -> Result<(u32, bool), Full> {
        self.acquire_within(tenant, self.max)
    }

    /// [`Tenants::acquire`] against `limit` held tenants.
    fn acquire_within(
        &mut self,
        tenant: Option<TenantId>,
        limit: usize,
    ) -> Result<(u32, bool), Full> {
        if let Some(&s) = self.slots.get(&tenant) {
            if let Some(h) = self.held[s as usize].as_mut() {
                h.requests += 1;
            }
            return Ok((s, false));
        }
        if self.slots.len() >= limit {
            return Err(Full);
        }
        let weight = Self::weight_of(&self.weights, self.default_weight, tenant);
        let held = Held {
            tenant,
            weight,
            requests: 1,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.held[s as usize] = Some(held);
                s
            }
            None => {
                self.held.push(Some(held));
                (self.held.len() - 1) as u32
            }
        };
        self.slots.insert(tenant, s);
        Ok((s, true))
    }

    /// The slot for one more request of `tenant`, past the limit if need be (a reload
    /// re-registering the requests already held).
    pub(crate) fn acquire_held(&mut self, tenant: Option<TenantId>) -> u32 {
        let (s, _) = self.acquire_within(tenant, usize::MAX).expect("no limit");
        s
    }

    /// The slot of a held tenant.
    pub(crate) fn slot_of(&self, tenant: Option<TenantId>) -> Option<u32> {
        self.slots.get(&tenant).copied()
    }

    /// One request of slot `s` ended; frees the slot with its last request.
    pub(crate) fn release(&mut self, s: u32) {
        let h = self.held[s as usize]
            .as_mut()
            .expect("released a free tenant slot");
        h.requests -= 1;
        if h.requests == 0 {
            self.slots.remove(&h.tenant);
            self.held[s as usize] = None;
            self.free.push(s);
        }
    }

    /// The weight of slot `s`.
    pub(crate) fn weight(&self, s: u32) -> f64 {
        self.held[s as usize].as_ref().map_or(1.0, |h| h.weight)
    }

    /// The tenant of slot `s`.
    pub(crate) fn tenant(&self, s: u32) -> Option<TenantId> {
        self.held[s as usize].as_ref().and_then(|h| h.tenant)
    }

    /// Tenants held.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots ever made (held or free).
    pub(crate) fn slots(&self) -> u32 {
        self.held.len() as u32
    }

    /// Requests held for slot `s`.
    pub(crate) fn requests(&self, s: u32) -> u32 {
        self.held[s as usize].as_ref().map_or(0, |h| h.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair::TenantWeight;

    #[test]
    fn slots_are_shared_reused_and_limited() {
        let cfg = FairnessConfig {
            enabled: true,
            max_tenants: 2,
            tenants: vec![TenantWeight { id: 9, weight: 3.0 }],
            ..FairnessConfig::default()
        };
        let mut t = Tenants::new(&cfg);
        let (a, fresh) = t.acquire(Some(TenantId(9))).unwrap();
        assert!(fresh);
        assert_eq!(t.weight(a), 3.0);
        assert_eq!(t.acquire(Some(TenantId(9))).unwrap(), (a, false));
        let (b, _) = t.acquire(None).unwrap();
        assert_eq!(t.weight(b), 1.0);
        assert!(
            t.acquire(Some(TenantId(1))).is_err(),
            "a third tenant is refused"
        );
        t.release(b);
        let (c, fresh) = t.acquire(Some(TenantId(1))).unwrap();
        assert_eq!((c, fresh), (b, true), "the freed slot is reused");
        assert_eq!(t.tenant(c), Some(TenantId(1)));
        t.release(a);
        assert_eq!(t.requests(a), 1);
        t.release(a);
        assert_eq!(t.len(), 1);
    }
}
