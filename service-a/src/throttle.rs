//! Brute-force protection for `/token`: at most `--max-login-failures` wrong passwords per
//! username are ever checked within `--login-failure-window-ms`; beyond that the username is
//! refused with 429 and `Retry-After` until its oldest counted failure leaves the window.
//!
//! Three properties a client cannot get around:
//! - **Counted before checked, settled at once.** A guess takes its place in the count
//!   before the password is looked at, so however many guesses arrive at once, at most the
//!   limit are evaluated; the route checks the password right away, before any `delay_ms`,
//!   and a wrong one stays counted while a right one gives its place back. Only failures
//!   count, then: right passwords in flight never throttle their owner. A right password
//!   does *not* clear the earlier failures: a correct login cannot buy an attacker more
//!   guesses.
//! - **Fixed memory.** Failures are counted in a count-min sketch: two rows of counters,
//!   each username mapping to one counter per row through a hash keyed with random keys
//!   at start-up (so nobody can pick names that collide on purpose). Its size does not
//!   depend on how many usernames there are or how long they are.
//! - **Errs on the side of throttling.** A username's count is the smaller of its two
//!   counters; other names sharing a counter can only raise it. Under a large spray an
//!   innocent name may be throttled early; an attacker's name is never counted low.
//!
//! Each counter keeps the failures of the last window in [`SLOTS`] time slots, plus the
//! slot in progress, so a failure counts for at least a whole window (at most one slot more).

use std::hash::{BuildHasher as _, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use telemetry::window::{SlidingWindow, SlotClock};
use tokio::time::Instant;

/// Counters per row (a power of two). 2 rows × 65,536 counters × 32 bytes = 4 MiB at most,
/// allocated zeroed, so the pages no username has touched cost nothing. With 200,000 names
/// failing within one window, a counter holds about 3 of them on average: an innocent
/// name is throttled only if both its counters reach the limit.
const COLUMNS: usize = 65_536;

/// Slots one window is divided into; a counter's resolution is window / SLOTS.
const SLOTS: usize = 10;

/// One counter: failures per slot over the window and the slot in progress.
type Cell = SlidingWindow<u16, { SLOTS + 1 }>;

/// A [`Cell`] as it is stored: `[newest as four u16, counts…]`. Arrays of integers are what
/// `vec![0; n]` can allocate zeroed instead of writing every page.
type StoredCell = [u16; 4 + SLOTS + 1];

fn load(stored: &StoredCell) -> Cell {
    let mut newest = 0u64;
    for (i, part) in stored[..4].iter().enumerate() {
        newest |= u64::from(*part) << (16 * i);
    }
    let mut counts = [0; SLOTS + 1];
    counts.copy_from_slice(&stored[4..]);
    Cell::from_parts(newest, counts)
}

fn store(cell: &Cell, stored: &mut StoredCell) {
    let (newest, counts) = cell.parts();
    for (i, part) in stored[..4].iter_mut().enumerate() {
        *part = (newest >> (16 * i)) as u16;
    }
    stored[4..].copy_from_slice(counts);
}

fn total(cell: &Cell) -> u32 {
    cell.iter().map(|(_, &count)| u32::from(count)).sum()
}

/// The first slot whose leaving the window brings the total under `max`.
fn frees_at(cell: &Cell, max: u32) -> u64 {
    let mut left = total(cell);
    let mut last = 0;
    for (slot, &count) in cell.iter() {
        left -= u32::from(count);
        last = slot;
        if left < max {
            return slot;
        }
    }
    last
}

/// Failed logins per username over a sliding window, in fixed memory (see the module docs).
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    clock: SlotClock,
    key: RandomState,
    rows: Mutex<Vec<StoredCell>>,
}

/// A guess that holds its place in a username's count until it is settled.
#[derive(Debug)]
#[must_use = "a guess gives its place back when dropped: call failed() for a wrong password"]
pub struct Guess<'a> {
    throttle: &'a LoginThrottle,
    /// The counter of each row, and the slot counted in; `None` when the throttle is off.
    place: Option<([usize; 2], u64)>,
}

impl Guess<'_> {
    /// The password was wrong: the guess stays counted.
    pub fn failed(mut self) {
        self.place = None;
    }
}

impl Drop for Guess<'_> {
    /// Right password: the place is given back.
    fn drop(&mut self) {
        if let Some((cells, slot)) = self.place.take() {
            self.throttle.refund(cells, slot);
        }
    }
}

impl LoginThrottle {
    /// At most `max_failures` failures per username within `window` (0: no limit).
    pub fn new(max_failures: u32, window: Duration) -> Self {
        let rows = if max_failures == 0 {
            Vec::new()
        } else {
            vec![[0; 4 + SLOTS + 1]; 2 * COLUMNS]
        };
        Self {
            max_failures,
            clock: SlotClock::new(window / SLOTS as u32),
            key: RandomState::new(),
            rows: Mutex::new(rows),
        }
    }

    /// Counts a guess for `username` before it is evaluated, or `Err(retry_after)` when the
    /// username has had its failures for this window.
    pub fn begin(&self, username: &str) -> Result<Guess<'_>, Duration> {
        if self.max_failures == 0 {
            return Ok(Guess {
                throttle: self,
                place: None,
            });
        }
        let cells = self.cells(username);
        let now = Instant::now();
        let slot = self.clock.slot(now);
        let mut rows = self.lock();
        let mut counters = cells.map(|c| load(&rows[c]));
        for counter in &mut counters {
            counter.advance(slot);
        }
        let count = counters.iter().map(total).min().unwrap_or(0);
        if count >= self.max_failures {
            let frees_at = counters
                .iter()
                .map(|c| frees_at(c, self.max_failures))
                .min()
                .unwrap_or(slot);
            // The slot leaves the window when slot + SLOTS + 1 begins.
            let at = self.clock.start_of(frees_at + SLOTS as u64 + 1);
            return Err(at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)));
        }
        for (counter, cell) in counters.iter_mut().zip(cells) {
            let count = counter.at(slot);
            *count = count.saturating_add(1);
            store(counter, &mut rows[cell]);
        }
        Ok(Guess {
            throttle: self,
            place: Some((cells, slot)),
        })
    }

    fn refund(&self, cells: [usize; 2], slot: u64) {
        let mut rows = self.lock();
        for cell in cells {
            let mut counter = load(&rows[cell]);
            // Only if the slot is still in the window (its place may have been reused since).
            if let Some(count) = counter.earlier(slot) {
                *count = count.saturating_sub(1);
                store(&counter, &mut rows[cell]);
            }
        }
    }

    /// The username's counter in each row: the two halves of one keyed 64-bit hash.
    fn cells(&self, username: &str) -> [usize; 2] {
        let hash = self.key.hash_one(username);
        let column = |bits: u64| (bits as usize) & (COLUMNS - 1);
        [column(hash), COLUMNS + column(hash >> 32)]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StoredCell>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every failure counted: nobody is throttled any more. A lab's end does this
    /// (clearing a fault at A's fault endpoint: see `crate::faults::switch`), so that one
    /// lab's guesses do not lock the next lab's users out. The counters are allocated
    /// afresh, zeroed, as at start-up.
    pub fn clear(&self) {
        let mut rows = self.lock();
        let len = rows.len();
        *rows = vec![[0; 4 + SLOTS + 1]; len];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(throttle: &LoginThrottle, username: &str) {
        throttle.begin(username).expect("not throttled").failed();
    }

    #[tokio::test(start_paused = true)]
    async fn the_eleventh_guess_within_the_window_is_refused_until_it_slides() {
        let throttle = LoginThrottle::new(10, Duration::from_secs(60));
        for _ in 0..10 {
            fail(&throttle, "divya");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let retry_after = throttle.begin("divya").expect_err("throttled");
        assert!(
            (Duration::from_secs(50)..=Duration::from_secs(60)).contains(&retry_after),
            "until the first failure is at least 60 s old, at most one 6 s slot more: {retry_after:?}"
        );
        assert!(
            throttle.begin("alice").is_ok(),
            "other users are unaffected"
        );

        tokio::time::advance(retry_after).await;
        assert!(throttle.begin("divya").is_ok(), "the window slid");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_counts_for_at_least_a_whole_window() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        fail(&throttle, "divya");
        tokio::time::advance(Duration::from_millis(59_999)).await;
        assert!(throttle.begin("divya").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_guesses_are_counted_before_any_is_evaluated() {
        let throttle = LoginThrottle::new(10, Duration::from_secs(60));
        let guesses: Vec<_> = (0..200)
            .filter_map(|_| throttle.begin("divya").ok())
            .collect();
        assert_eq!(guesses.len(), 10, "only the limit may be evaluated");
        guesses.into_iter().for_each(Guess::failed);
        assert!(throttle.begin("divya").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_right_or_unevaluated_guess_gives_its_place_back_but_clears_nothing() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        fail(&throttle, "divya");
        drop(throttle.begin("divya").expect("right password"));
        drop(throttle.begin("divya").expect("abandoned"));
        fail(&throttle, "divya");
        assert!(
            throttle.begin("divya").is_err(),
            "two failures: a success in between cleared nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_spray_of_names_frees_no_attacker_and_spares_a_quiet_user() {
        let throttle = LoginThrottle::new(10, Duration::from_secs(60));
        for n in 0..1_000 {
            fail(&throttle, &format!("sprayed-{n}-{}", "x".repeat(100)));
        }
        let evaluated = (0..30)
            .filter_map(|_| throttle.begin("divya").ok().map(Guess::failed))
            .count();
        assert!(evaluated <= 10, "never more than the limit: {evaluated}");
        assert!(
            throttle.begin("alice").is_ok(),
            "1,000 names leave others alone"
        );

        for n in 0..200_000 {
            if let Ok(guess) = throttle.begin(&n.to_string()) {
                guess.failed();
            }
        }
        let evaluated = (0..30)
            .filter_map(|_| throttle.begin("mallory").ok().map(Guess::failed))
            .count();
        assert!(
            evaluated <= 10,
            "a flood of names never frees a name: {evaluated}"
        );
        let spared = (0..100)
            .filter(|n| throttle.begin(&format!("innocent-{n}")).is_ok())
            .count();
        assert!(
            spared >= 95,
            "200,000 failing names throttle few others: {spared} of 100"
        );
    }

    #[test]
    fn a_stored_cell_round_trips() {
        let cell = Cell::from_parts(
            0x0123_4567_89ab_cdef,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, u16::MAX],
        );
        let mut stored = [0; 4 + SLOTS + 1];
        store(&cell, &mut stored);
        assert_eq!(load(&stored), cell);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_disables() {
        let off = LoginThrottle::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            fail(&off, "divya");
        }
        assert!(off.begin("divya").is_ok());
    }
}
