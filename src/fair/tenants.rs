//! The tenants the scheduler holds: each gets a dense slot (the wait queue's lanes and the
//! fair counters are indexed by it) while it has a request waiting or running, up to
//! [`super::FairnessConfig::max_tenants`]. Scheduler thread only.

use super::share::Pricing;
use super::FairnessConfig;
use crate::hash::FastMap;
use crate::request::TenantId;

/// The registry. Per-slot state is kept in dense arrays by slot rather than one record
/// per slot: a drain touches each arriving request's count and a charge its costs, and
/// with many tenants the arrays stay in cache where 32-byte records did not.
pub(crate) struct Tenants {
    /// The slot of every held tenant (`None`: the requests that carry no tenant).
    slots: FastMap<Option<TenantId>, u32>,
    /// `ids[s]`: the tenant slot `s` is held for (stale while the slot is free).
    ids: Vec<Option<TenantId>>,
    /// `requests[s]`: requests of slot `s`'s tenant the scheduler holds (waiting, in hand
    /// or running); 0 exactly when the slot is free (then it is in `free`).
    requests: Vec<u32>,
    /// `costs[s]`: what a prompt token and an output token of slot `s`'s tenant cost, in
    /// counter units ([`Pricing::costs`] of its weight; stale while free).
    costs: Vec<[u64; 2]>,
    /// Free slots, reused before new ones are made.
    free: Vec<u32>,
    /// The costs of the configured tenants, by tenant id.
    configured: FastMap<u64, [u64; 2]>,
    /// The costs of every other tenant (`default_weight`).
    default_costs: [u64; 2],
    /// The configuration's counter units.
    pricing: Pricing,
    max: usize,
}

/// A tenant past the limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Full;

impl Tenants {
    /// The registry for `config` (a reload builds a new one and re-registers the held
    /// requests with [`Tenants::acquire_held`]). Its maps hold at most `max_tenants`
    /// entries, so ids a client picks to collide cost at most that bound per look-up; only
    /// a reload's held requests and a hand-off's requests from the rings (bounded by the
    /// rings' capacity) go past it.
    pub(crate) fn new(config: &FairnessConfig) -> Self {
        let pricing = Pricing::new(config);
        Tenants {
            slots: FastMap::default(),
            ids: Vec::new(),
            requests: Vec::new(),
            costs: Vec::new(),
            free: Vec::new(),
            configured: config
                .tenants
                .iter()
                .map(|t| (t.id, pricing.costs(t.weight)))
                .collect(),
            default_costs: pricing.costs(config.default_weight),
            pricing,
            max: config.max_tenants,
        }
    }

    /// The slot for one more request of `tenant`, and whether the slot is new to it (its
    /// counters must start afresh). `Full` when the tenant is new and the limit is reached.
    ///
    /// `hint` is a slot the caller looked up earlier ([`Tenants::slot_of`], or `NO_SLOT`):
    /// if it is still `tenant`'s, the map is not searched again.
    pub(crate) fn acquire(
        &mut self,
        tenant: Option<TenantId>,
        hint: u32,
    ) -> Result<(u32, bool), Full> {
        let h = hint as usize;
        if self.requests.get(h).is_some_and(|&n| n > 0) && self.ids[h] == tenant {
            self.requests[h] += 1;
            return Ok((hint, false));
        }
        self.acquire_within(tenant, self.max)
    }

    /// [`Tenants::acquire`] against `limit` held tenants, without a hint.
    fn acquire_within(
        &mut self,
        tenant: Option<TenantId>,
        limit: usize,
    ) -> Result<(u32, bool), Full> {
        if let Some(&s) = self.slots.get(&tenant) {
            self.requests[s as usize] += 1;
            return Ok((s, false));
        }
        if self.slots.len() >= limit {
            return Err(Full);
        }
        let costs = tenant
            .and_then(|t| self.configured.get(&t.0).copied())
            .unwrap_or(self.default_costs);
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.ids.push(None);
                self.requests.push(0);
                self.costs.push([0; 2]);
                (self.ids.len() - 1) as u32
            }
        };
        let i = s as usize;
        (self.ids[i], self.requests[i], self.costs[i]) = (tenant, 1, costs);
        self.slots.insert(tenant, s);
        Ok((s, true))
    }

    /// The slot for one more request of `tenant`, past the limit if need be (a reload
    /// re-registering the requests already held).
    pub(crate) fn acquire_held(&mut self, tenant: Option<TenantId>) -> u32 {
        self.acquire_past_limit(tenant).0
    }

    /// [`Tenants::acquire`] with no limit: for requests that were accepted and must be
    /// held even so (a hand-off taking them from the rings).
    pub(crate) fn acquire_past_limit(&mut self, tenant: Option<TenantId>) -> (u32, bool) {
        self.acquire_within(tenant, usize::MAX).expect("no limit")
    }

    /// The slot of a held tenant.
    pub(crate) fn slot_of(&self, tenant: Option<TenantId>) -> Option<u32> {
        self.slots.get(&tenant).copied()
    }

    /// One request of slot `s` ended; frees the slot with its last request.
    pub(crate) fn release(&mut self, s: u32) {
        let i = s as usize;
        assert!(self.requests[i] > 0, "released a free tenant slot");
        self.requests[i] -= 1;
        if self.requests[i] == 0 {
            self.slots.remove(&self.ids[i]);
            self.free.push(s);
        }
    }

    /// What one token of `kind` (0: prompt, 1: output) of slot `s`'s tenant costs, in
    /// counter units.
    pub(crate) fn cost(&self, s: u32, kind: usize) -> u64 {
        self.costs.get(s as usize).map_or(0, |c| c[kind])
    }

    /// Counter units as service (weighted tokens over the tenant's weight).
    pub(crate) fn service(&self, units: u128) -> f64 {
        self.pricing.service(units)
    }

    /// The tenant of slot `s` (held).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // for the per-tenant metrics
    pub(crate) fn tenant(&self, s: u32) -> Option<TenantId> {
        self.ids.get(s as usize).copied().flatten()
    }

    /// Tenants held.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots ever made (held or free).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // for the per-tenant metrics
    pub(crate) fn slots(&self) -> u32 {
        self.ids.len() as u32
    }

    /// Requests held for slot `s`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // for the per-tenant metrics
    pub(crate) fn requests(&self, s: u32) -> u32 {
        self.requests.get(s as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair::TenantWeight;
    use crate::queue::slab::NO_SLOT;

    #[test]
    fn slots_are_shared_reused_and_limited() {
        let cfg = FairnessConfig {
            enabled: true,
            max_tenants: 2,
            tenants: vec![TenantWeight { id: 9, weight: 3.0 }],
            ..FairnessConfig::default()
        };
        let mut t = Tenants::new(&cfg);
        let (a, fresh) = t.acquire(Some(TenantId(9)), NO_SLOT).unwrap();
        assert!(fresh);
        // Weight 3 is the greatest: its prompt token is the cheapest, one unit's worth.
        let unit = 1 << crate::fair::share::FRAC_BITS;
        assert_eq!((t.cost(a, 0), t.cost(a, 1)), (unit, 2 * unit));
        assert_eq!(t.acquire(Some(TenantId(9)), NO_SLOT).unwrap(), (a, false));
        let (b, _) = t.acquire(None, NO_SLOT).unwrap();
        assert_eq!((t.cost(b, 0), t.cost(b, 1)), (3 * unit, 6 * unit));
        assert!(
            t.acquire(Some(TenantId(1)), NO_SLOT).is_err(),
            "a third tenant is refused"
        );
        t.release(b);
        let (c, fresh) = t.acquire(Some(TenantId(1)), NO_SLOT).unwrap();
        assert_eq!((c, fresh), (b, true), "the freed slot is reused");
        assert_eq!(t.tenant(c), Some(TenantId(1)));
        t.release(a);
        assert_eq!(t.requests(a), 1);
        t.release(a);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_hint_is_taken_only_while_it_names_the_tenant() {
        let cfg = FairnessConfig {
            enabled: true,
            max_tenants: 4,
            ..FairnessConfig::default()
        };
        let mut t = Tenants::new(&cfg);
        let (a, _) = t.acquire(Some(TenantId(1)), NO_SLOT).unwrap();
        let (b, _) = t.acquire(Some(TenantId(2)), NO_SLOT).unwrap();
        assert_eq!(t.acquire(Some(TenantId(1)), a).unwrap(), (a, false));
        assert_eq!(t.requests(a), 2);
        // A hint naming another tenant's slot, a free slot or no slot at all is ignored.
        assert_eq!(t.acquire(Some(TenantId(1)), b).unwrap(), (a, false));
        t.release(b);
        assert_eq!(
            t.acquire(Some(TenantId(3)), b).unwrap(),
            (b, true),
            "b was free"
        );
        let (c, fresh) = t.acquire(Some(TenantId(4)), 99).unwrap();
        assert!(fresh && c != a && c != b);
        assert_eq!(t.requests(a), 3);
        assert_eq!(t.slot_of(Some(TenantId(2))), None);
    }
}
