//! The one sliding window of time slots every protection counts in: A's login throttle, B's
//! retry budget and circuit breaker. Time is cut into slots of a fixed length, numbered
//! from an origin ([`SlotClock`]); a [`SlidingWindow`] keeps the last `S` slots (the one in
//! progress included) as plain values in a ring, so it is small, `Copy`, and can be stored
//! compactly. What a slot holds (a count, a pair of counts) is the caller's.
//!
//! A value recorded in slot `k` counts until slot `k + S` begins: with `S` slots of
//! `window / (S - 1)`, at least the whole window and at most one slot more; with `S` slots
//! of `window / S`, between `window - slot` and `window`.

use std::time::Duration;

use tokio::time::Instant;

/// Turns instants into slot numbers: slot 0 begins at the origin.
#[derive(Debug, Clone, Copy)]
pub struct SlotClock {
    origin: Instant,
    slot: Duration,
}

impl SlotClock {
    /// Slots of `slot` length from now (at least a millisecond).
    pub fn new(slot: Duration) -> Self {
        Self {
            origin: Instant::now(),
            slot: slot.max(Duration::from_millis(1)),
        }
    }

    /// The slot `now` falls in.
    pub fn slot(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.slot.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The slot now falls in.
    pub fn now(&self) -> u64 {
        self.slot(Instant::now())
    }

    /// When slot `slot` begins.
    pub fn start_of(&self, slot: u64) -> Instant {
        self.origin + self.slot * u32::try_from(slot).unwrap_or(u32::MAX)
    }
}

/// The last `S` slots of `T`, the newest being the one in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow<T, const S: usize> {
    /// The newest slot written.
    newest: u64,
    /// Slot `k` lives at `k % S`.
    slots: [T; S],
}

impl<T: Copy + Default, const S: usize> Default for SlidingWindow<T, S> {
    fn default() -> Self {
        Self {
            newest: 0,
            slots: [T::default(); S],
        }
    }
}

impl<T: Copy + Default, const S: usize> SlidingWindow<T, S> {
    /// A window whose newest slot is `newest`, holding `slots` (as [`Self::parts`] gave).
    pub fn from_parts(newest: u64, slots: [T; S]) -> Self {
        Self { newest, slots }
    }

    /// The newest slot and the ring, to store the window compactly.
    pub fn parts(&self) -> (u64, &[T; S]) {
        (self.newest, &self.slots)
    }

    /// Moves the window to `slot`: slots that left it are cleared. An older `slot` changes
    /// nothing.
    pub fn advance(&mut self, slot: u64) {
        if slot <= self.newest {
            return;
        }
        let stale = (slot - self.newest).min(S as u64);
        for k in 1..=stale {
            self.slots[ring::<S>(self.newest + k)] = T::default();
        }
        self.newest = slot;
    }

    /// The value of slot `slot`, after moving the window to it.
    pub fn at(&mut self, slot: u64) -> &mut T {
        self.advance(slot);
        &mut self.slots[ring::<S>(slot.max(self.newest))]
    }

    /// The value of an earlier slot still in the window (to take back what was recorded
    /// there), `None` once it has left.
    pub fn earlier(&mut self, slot: u64) -> Option<&mut T> {
        let in_window = slot <= self.newest && self.newest - slot < S as u64;
        in_window.then(|| &mut self.slots[ring::<S>(slot)])
    }

    /// The slots in the window, oldest first, with their numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let oldest = self.newest.saturating_sub(S as u64 - 1);
        (oldest..=self.newest).map(|slot| (slot, &self.slots[ring::<S>(slot)]))
    }
}

fn ring<const S: usize>(slot: u64) -> usize {
    (slot % S as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_leave_the_window_s_slots_after_their_own() {
        let mut window = SlidingWindow::<u32, 4>::default();
        *window.at(0) += 1;
        *window.at(2) += 10;
        let total = |w: &SlidingWindow<u32, 4>| w.iter().map(|(_, v)| *v).sum::<u32>();
        assert_eq!(total(&window), 11);
        window.advance(3);
        assert_eq!(total(&window), 11, "slot 0 is still one of the last four");
        window.advance(4);
        assert_eq!(total(&window), 10, "slot 0 left when slot 4 began");
        window.advance(100);
        assert_eq!(total(&window), 0);
    }

    #[test]
    fn an_earlier_slot_can_be_taken_back_while_it_is_in_the_window() {
        let mut window = SlidingWindow::<u16, 3>::default();
        *window.at(5) += 2;
        window.advance(6);
        *window.earlier(5).expect("still in") -= 1;
        assert_eq!(window.iter().map(|(_, v)| *v).sum::<u16>(), 1);
        window.advance(8);
        assert!(window.earlier(5).is_none(), "gone");
        assert!(window.earlier(9).is_none(), "not yet");
    }

    #[test]
    fn a_window_round_trips_through_its_parts() {
        let mut window = SlidingWindow::<u16, 3>::default();
        *window.at(7) = 4;
        let (newest, slots) = window.parts();
        assert_eq!(SlidingWindow::from_parts(newest, *slots), window);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_numbers_slots_from_its_origin() {
        let clock = SlotClock::new(Duration::from_secs(1));
        assert_eq!(clock.now(), 0);
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert_eq!(clock.now(), 2);
        assert_eq!(
            clock.start_of(3).duration_since(clock.start_of(0)),
            Duration::from_secs(3)
        );
    }
}
