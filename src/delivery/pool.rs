//! The pool of application users (SPEC §17.3): one [`Pacer`] per principal
//! (its concurrency limit, learned caps, learned pace and pauses), each call
//! to the principal with the most room, a 429 pausing only its own principal,
//! and a principal Entra rejects — or that alone is answered 403 — out of the
//! pool for the secret's TTL while the others carry on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::select_all;

use super::pacer::{Pacer, Slot, THROTTLE_CODES};
use super::port::{Principal, Principals};
use crate::lock;
use crate::outcome::DeliveryError;

/// The longest a principal answered 403 waits to be judged.
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// How every principal's pacer is built.
#[derive(Debug, Clone, Copy)]
pub struct PacerSettings {
    /// `D365_MAX_IN_FLIGHT`, per principal.
    pub max_in_flight: usize,
    /// `D365_LEARNED_CAP_SECONDS`.
    pub learned_cap_period: Duration,
    /// `D365_BUDGET_WINDOW_SECONDS`.
    pub budget_window: Duration,
}

impl PacerSettings {
    fn pacer(&self) -> Pacer {
        Pacer::new(self.max_in_flight, self.max_in_flight).with_learned_cap_period(self.learned_cap_period).with_budget_window(self.budget_window)
    }
}

/// One principal of the pool.
pub struct Member {
    pub principal: Principal,
    pub pacer: Arc<Pacer>,
    /// Out of the pool until then (Entra rejected it, or it alone was answered 403).
    out_until: Mutex<Option<Instant>>,
    /// Answered 403 and not yet judged: no new call while another principal has room.
    suspect_until: Mutex<Option<Instant>>,
}

impl Member {
    fn is_out(&self, now: Instant) -> bool {
        lock(&self.out_until).is_some_and(|until| until > now)
    }

    fn is_suspect(&self, now: Instant) -> bool {
        lock(&self.suspect_until).is_some_and(|until| until > now)
    }
}

/// The application users of one destination.
pub struct Pool {
    settings: PacerSettings,
    /// How long a principal stays out (`D365_SECRET_TTL_SECONDS`; at least a minute).
    out_for: Duration,
    members: Mutex<Members>,
    /// `send --rate N` (SPEC §16): at most N starts a second for the whole pool.
    rate: Mutex<Option<Duration>>,
    next_start: Mutex<Option<Instant>>,
    stopped: tokio::sync::watch::Sender<bool>,
}

struct Members {
    list: Vec<Arc<Member>>,
    /// The secret version the list was built from.
    version: Option<String>,
}

/// Why no principal could take a call.
#[derive(Debug, Clone, PartialEq)]
pub enum NoRoom {
    /// Every principal is paused past the start cut-off, or the cut-off came.
    Waited,
    /// Every principal is out of the pool (or avoided by this record).
    NoPrincipal,
}

impl Pool {
    /// A pool of one principal, the placeholder until the secret is read: its
    /// pacer is kept when the secret names that principal or is a pool of one.
    pub fn new(settings: PacerSettings, out_for: Duration) -> Pool {
        let first =
            Arc::new(Member { principal: Principal::new(""), pacer: Arc::new(settings.pacer()), out_until: Mutex::new(None), suspect_until: Mutex::new(None) });
        Pool {
            settings,
            out_for: out_for.max(Duration::from_secs(60)),
            members: Mutex::new(Members { list: vec![first], version: None }),
            rate: Mutex::new(None),
            next_start: Mutex::new(None),
            stopped: tokio::sync::watch::channel(false).0,
        }
    }

    /// A pool of one principal paced by `pacer` (tests that build a pacer).
    #[cfg(test)]
    pub(crate) fn of(pacer: Pacer) -> Pool {
        let settings =
            PacerSettings { max_in_flight: pacer.ceiling(), learned_cap_period: super::pacer::LEARNED_CAP_PERIOD, budget_window: super::budget::BUDGET_WINDOW };
        let pool = Pool::new(settings, Duration::ZERO);
        lock(&pool.members).list[0] =
            Arc::new(Member { principal: Principal::new(""), pacer: Arc::new(pacer), out_until: Mutex::new(None), suspect_until: Mutex::new(None) });
        pool
    }

    /// Makes the pool the secret's principals, in its order (SPEC §17.3). A
    /// principal already known keeps its pacer (limit, learned caps, pauses);
    /// a new secret version lets every principal back in.
    pub fn sync<'a>(&self, client_ids: impl IntoIterator<Item = &'a str>, version: &str) {
        let mut members = lock(&self.members);
        if members.version.as_deref() == Some(version) {
            return;
        }
        let ids: Vec<&str> = client_ids.into_iter().collect();
        let old = std::mem::take(&mut members.list);
        let placeholder = (old.len() == 1 && old[0].principal.client_id().is_empty()).then(|| old[0].pacer.clone());
        members.list = ids
            .iter()
            .enumerate()
            .map(|(i, id)| match old.iter().find(|m| m.principal.client_id() == *id) {
                Some(known) => {
                    *lock(&known.out_until) = None;
                    known.clone()
                }
                None => {
                    let pacer = match (&placeholder, i) {
                        (Some(pacer), 0) => pacer.clone(),
                        _ => Arc::new(self.settings.pacer()),
                    };
                    if self.is_stopped() {
                        pacer.stop();
                    }
                    Arc::new(Member { principal: Principal::new(id), pacer, out_until: Mutex::new(None), suspect_until: Mutex::new(None) })
                }
            })
            .collect();
        members.version = Some(version.to_string());
    }

    /// Every principal, in the secret's order.
    pub fn members(&self) -> Vec<Arc<Member>> {
        lock(&self.members).list.clone()
    }

    /// The principals in the pool now (not out of it), from the most room to the least.
    fn ranked(&self, avoid: &[Principal]) -> Vec<Arc<Member>> {
        let now = Instant::now();
        let mut members: Vec<(_, Arc<Member>)> =
            lock(&self.members).list.iter().filter(|m| !m.is_out(now) && !avoid.contains(&m.principal)).map(|m| (m.pacer.room().rank(), m.clone())).collect();
        // A principal answered 403 takes no call while another can (until it is judged).
        if members.iter().any(|(_, m)| !m.is_suspect(now)) {
            members.retain(|(_, m)| !m.is_suspect(now));
        }
        // A stable sort: ties go to the secret's order.
        members.sort_by_key(|m| m.0);
        members.into_iter().map(|(_, m)| m).collect()
    }

    /// Whether a principal other than those in `avoid` is in the pool.
    pub fn has_other(&self, avoid: &[Principal]) -> bool {
        !self.ranked(avoid).is_empty()
    }

    /// Waits for a slot of the principal with the most room (not paused, not
    /// out, not in `avoid`), then for its paced start and the pool's rate;
    /// every principal's wait runs at once and the first slot wins.
    pub async fn acquire(&self, until: Instant, avoid: &[Principal]) -> Result<(Arc<Member>, Slot), NoRoom> {
        let mut stopped = self.stopped.subscribe();
        let chosen = tokio::select! {
            chosen = self.first_slot(until, avoid) => chosen,
            _ = stopped.wait_for(|s| *s) => Err(NoRoom::Waited),
        }?;
        let (member, slot) = chosen;
        let paced = tokio::select! {
            slot = member.pacer.pace(slot, until) => slot,
            _ = stopped.wait_for(|s| *s) => None,
        };
        let slot = paced.ok_or(NoRoom::Waited)?;
        let Some(interval) = *lock(&self.rate) else { return Ok((member, slot)) };
        let start = {
            let mut next = lock(&self.next_start);
            let start = next.map_or(Instant::now(), |n| n.max(Instant::now()));
            *next = Some(start + interval);
            start
        };
        if start >= until {
            return Err(NoRoom::Waited);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(start.into()) => Ok((member, slot)),
            _ = stopped.wait_for(|s| *s) => Err(NoRoom::Waited),
        }
    }

    async fn first_slot(&self, until: Instant, avoid: &[Principal]) -> Result<(Arc<Member>, Slot), NoRoom> {
        loop {
            let (member, slot) = self.first_free(until, avoid).await?;
            // It left the pool, or was answered 403, while this call waited for it: choose again.
            if !self.ranked(avoid).iter().any(|m| Arc::ptr_eq(m, &member)) {
                drop(slot);
                continue;
            }
            return Ok((member, slot));
        }
    }

    async fn first_free(&self, until: Instant, avoid: &[Principal]) -> Result<(Arc<Member>, Slot), NoRoom> {
        let ranked = self.ranked(avoid);
        if ranked.is_empty() {
            return Err(NoRoom::NoPrincipal);
        }
        if let [only] = ranked.as_slice() {
            return only.pacer.acquire_slot(until).await.map(|slot| (only.clone(), slot)).ok_or(NoRoom::Waited);
        }
        // Polled in rank order: of the slots free at once, the roomiest principal's wins.
        let mut waits: Vec<_> = ranked.into_iter().map(|m| Box::pin(async move { m.pacer.acquire_slot(until).await.map(|slot| (m, slot)) })).collect();
        loop {
            let (got, _, rest) = select_all(waits).await;
            if let Some(chosen) = got {
                return Ok(chosen);
            }
            if rest.is_empty() {
                return Err(NoRoom::Waited);
            }
            waits = rest;
        }
    }

    /// Why a call cannot start before `until` when every principal in the pool
    /// is paused past it: the record is held back by the pause that ends first.
    pub fn held_back(&self, until: Instant) -> Option<DeliveryError> {
        let ranked = self.ranked(&[]);
        let mut soonest: Option<DeliveryError> = None;
        for member in &ranked {
            let held = member.pacer.held_back(until)?;
            let sooner = match (&soonest, &held) {
                (Some(DeliveryError::HeldBack { retry_after: a, .. }), DeliveryError::HeldBack { retry_after: b, .. }) => b < a,
                _ => true,
            };
            if sooner {
                soonest = Some(held);
            }
        }
        soonest
    }

    /// Takes `principal` out of the pool for the secret's TTL, with one log line
    /// naming its client id (never its secret). The last principal in the pool
    /// stays: with none left the records would fail all the same (SPEC §7).
    pub fn leave(&self, principal: &Principal, why: &str) -> bool {
        let now = Instant::now();
        let members = lock(&self.members);
        let in_pool = members.list.iter().filter(|m| !m.is_out(now)).count();
        let Some(member) = members.list.iter().find(|m| &m.principal == principal) else { return false };
        if member.is_out(now) || in_pool < 2 {
            return false;
        }
        *lock(&member.out_until) = Some(now + self.out_for);
        tracing::error!(
            message = "An application user left the pool; the others carry on.",
            client_id = %principal,
            reason = why,
            back_in_seconds = self.out_for.as_secs(),
            in_pool = in_pool - 1,
        );
        true
    }

    /// `principal` was answered 403: until the record is tried as another (at
    /// most [`SUSPECT_FOR`]), it takes no new call while another principal can.
    pub fn suspect(&self, principal: &Principal) {
        if let Some(member) = self.member(principal) {
            *lock(&member.suspect_until) = Some(Instant::now() + SUSPECT_FOR);
        }
    }

    /// Another principal was answered 403 too: the 403 was not `principal`'s alone.
    pub fn acquit(&self, principal: &Principal) {
        if let Some(member) = self.member(principal) {
            *lock(&member.suspect_until) = None;
        }
    }

    /// `member` just learned a pace from a spent budget: the principals that have
    /// none start at it (each application user has the same budget, and this
    /// environment's share of one is its share of the others).
    pub fn share_learned_rate(&self, member: &Member) {
        let Some(rate) = member.pacer.learned_rate() else { return };
        for other in self.members().iter().filter(|m| m.principal != member.principal) {
            other.pacer.seed_rate(rate);
        }
    }

    /// The member for `principal`, if it is still in the secret.
    pub fn member(&self, principal: &Principal) -> Option<Arc<Member>> {
        lock(&self.members).list.iter().find(|m| &m.principal == principal).cloned()
    }

    /// At most `per_second` starts a second for the whole pool (`send --rate`).
    pub fn set_rate(&self, per_second: f64) {
        if per_second.is_finite() && per_second > 0.0 {
            *lock(&self.rate) = Some(Duration::from_secs_f64(1.0 / per_second));
        }
    }

    /// No call starts from now on; calls in flight finish (`send` interrupted).
    pub fn stop(&self) {
        self.stopped.send_replace(true);
        for member in self.members() {
            member.pacer.stop();
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once the pool is stopped.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        if stopped.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The most calls in flight at once: `D365_MAX_IN_FLIGHT` per principal in the pool.
    pub fn ceiling(&self) -> usize {
        self.settings.max_in_flight.max(1) * self.ranked(&[]).len().max(1)
    }

    /// The sum of the principals' current concurrency limits.
    pub fn limit(&self) -> usize {
        self.members().iter().map(|m| m.pacer.limit()).sum()
    }

    /// The 429 answers by code since the last call, over every principal.
    pub fn take_throttled_by_code(&self) -> [(&'static str, u64); 4] {
        let mut total: [(&'static str, u64); 4] = std::array::from_fn(|i| (THROTTLE_CODES[i], 0));
        for member in self.members() {
            for (i, (_, n)) in member.pacer.take_throttled_by_code().into_iter().enumerate() {
                total[i].1 += n;
            }
        }
        total
    }

    /// The first principal's pacer (a pool of one: the tests, `check`).
    pub fn first(&self) -> Arc<Pacer> {
        lock(&self.members).list[0].pacer.clone()
    }
}

impl Principals for Pool {
    fn follow(&self, client_ids: &[&str], version: &str) {
        self.sync(client_ids.iter().copied(), version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_in_flight: usize) -> Pool {
        let settings = PacerSettings { max_in_flight, learned_cap_period: Duration::from_secs(300), budget_window: Duration::from_secs(300) };
        let pool = Pool::new(settings, Duration::from_secs(300));
        pool.sync(["a", "b"], "v1");
        pool
    }

    fn until() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn each_call_goes_to_the_principal_with_the_most_room() {
        let pool = pool(2);
        let mut held = Vec::new();
        let mut chosen = Vec::new();
        for _ in 0..4 {
            let (member, slot) = pool.acquire(until(), &[]).await.unwrap();
            chosen.push(member.principal.to_string());
            held.push(slot);
        }
        assert_eq!(chosen, ["a", "b", "a", "b"], "the freer one each time, ties in the secret's order");
        // Both full: the first slot given back wins, whoever's it is.
        let waiter = pool.acquire(until(), &[]);
        drop(held.remove(1));
        let (member, _) = waiter.await.unwrap();
        assert_eq!(member.principal.client_id(), "b");
    }

    #[tokio::test]
    async fn a_pause_holds_back_only_its_principal() {
        let pool = pool(4);
        pool.member(&Principal::new("a")).unwrap().pacer.pause(Duration::from_secs(60));
        for _ in 0..3 {
            let (member, _slot) = pool.acquire(until(), &[]).await.unwrap();
            assert_eq!(member.principal.client_id(), "b");
        }
        assert_eq!(pool.held_back(until()), None, "b can still start");
        pool.member(&Principal::new("b")).unwrap().pacer.pause(Duration::from_secs(30));
        match pool.held_back(until()) {
            Some(DeliveryError::HeldBack { retry_after, .. }) => assert!(retry_after <= Duration::from_secs(30) && retry_after > Duration::from_secs(25)),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.acquire(until(), &[]).await.err(), Some(NoRoom::Waited));
    }

    #[tokio::test]
    async fn a_principal_leaves_for_a_while_and_the_last_one_stays() {
        let pool = pool(4);
        let a = Principal::new("a");
        assert!(pool.leave(&a, "Entra rejected its credentials"));
        assert!(!pool.leave(&a, "again"), "logged once");
        assert!(!pool.leave(&Principal::new("b"), "the last"), "the last principal stays");
        for _ in 0..3 {
            assert_eq!(pool.acquire(until(), &[]).await.unwrap().0.principal.client_id(), "b");
        }
        assert_eq!(pool.acquire(until(), &[Principal::new("b")]).await.err(), Some(NoRoom::NoPrincipal));
        assert_eq!(pool.ceiling(), 4);
        // A new secret version lets it back in, keeping what each pacer learned.
        let b_pacer = pool.member(&Principal::new("b")).unwrap().pacer.clone();
        pool.sync(["b", "a", "c"], "v2");
        assert_eq!(pool.members().iter().map(|m| m.principal.to_string()).collect::<Vec<_>>(), ["b", "a", "c"]);
        assert!(Arc::ptr_eq(&pool.member(&Principal::new("b")).unwrap().pacer, &b_pacer));
        assert_eq!(pool.ceiling(), 12);
    }

    #[test]
    fn a_pace_learned_by_one_principal_is_where_the_others_start() {
        let pool = pool(4);
        let (a, b) = (pool.member(&Principal::new("a")).unwrap(), pool.member(&Principal::new("b")).unwrap());
        pool.share_learned_rate(&a);
        assert_eq!(b.pacer.learned_rate(), None, "nothing learned, nothing shared");
        a.pacer.seed_rate(7.0);
        b.pacer.seed_rate(3.0);
        pool.share_learned_rate(&a);
        assert_eq!(b.pacer.learned_rate(), Some(3.0), "a pace of its own is kept");
        let pool = super::tests::pool(4);
        let (a, b) = (pool.member(&Principal::new("a")).unwrap(), pool.member(&Principal::new("b")).unwrap());
        a.pacer.seed_rate(7.0);
        pool.share_learned_rate(&a);
        assert_eq!(b.pacer.learned_rate(), Some(7.0));
    }

    #[test]
    fn the_placeholder_pacer_becomes_the_first_principal() {
        let settings = PacerSettings { max_in_flight: 3, learned_cap_period: Duration::ZERO, budget_window: Duration::from_secs(300) };
        let pool = Pool::new(settings, Duration::ZERO);
        let before = pool.first();
        pool.sync(["a"], "v1");
        assert!(Arc::ptr_eq(&before, &pool.first()));
        assert_eq!(pool.members()[0].principal, Principal::new("a"));
    }

    #[tokio::test]
    async fn a_rate_spaces_the_starts_evenly() {
        let pool = Pool::of(Pacer::new(8, 8));
        pool.set_rate(20.0);
        let until = Instant::now() + Duration::from_secs(5);
        let started = Instant::now();
        for _ in 0..6 {
            drop(pool.acquire(until, &[]).await.expect("a slot"));
        }
        let elapsed = started.elapsed();
        // Six starts at 20 per second: the sixth 250 ms after the first.
        assert!(elapsed >= Duration::from_millis(240) && elapsed < Duration::from_millis(600), "{elapsed:?}");
    }
}
