//! Timers for async code: [`sleep`], [`sleep_until`], [`timeout`] and [`interval`].
//!
//! Green threads call [`greenrt::sleep`](crate::sleep), which waits on the same timers.
//! Awaiting a timer holds no thread: the runtime thread that first polled it wakes it
//! when it is due, parking no longer than its next deadline.
//!
//! ```
//! use std::time::Duration;
//! let rt = greenrt::runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     greenrt::time::sleep(Duration::from_millis(1)).await;
//! });
//! ```

// Implementation: each runtime thread (a worker, or a thread inside `Runtime::run` /
// `Runtime::block_on`) owns a `Timers` heap, touched only by that thread. A sleep
// registers with the thread that first polls it, and that thread fires it, checking its
// heap every few scheduling ticks and parking no longer than its next deadline. So a
// sleeping green thread costs one heap entry and no thread, and setting a timer takes no
// lock. This module never blocks and runs no user code other than wakers.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

// The life of an `Entry`: WAITING until exactly one of
// - its thread fires it (FIRED: the `Sleep` completes),
// - its `Sleep` is dropped (CANCELLED: the heap discards it),
// - its thread stops running the runtime with it still pending (ORPHANED: the `Sleep`
//   is woken and registers again with whichever runtime thread polls it next).
const WAITING: u8 = 0;
const FIRED: u8 = 1;
const CANCELLED: u8 = 2;
const ORPHANED: u8 = 3;

/// Below this many cancelled entries the heap is never compacted: dropping them when
/// they reach the top is cheaper for small heaps.
const COMPACT_MIN: usize = 64;

/// One registered deadline, shared by the [`Sleep`] that set it and the heap holding it.
pub(crate) struct Entry {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
    /// The owning heap's count of cancelled entries it still holds.
    cancelled: Arc<AtomicUsize>,
}

impl Entry {
    fn take_waker(&self) -> Option<Waker> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct Key {
    deadline: Instant,
    seq: u64,
    entry: Arc<Entry>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// A thread's pending deadlines: a min-heap, O(log n) per insert and fire.
///
/// A dropped [`Sleep`] only marks its entry cancelled (it may be dropped on any thread).
/// The heap discards cancelled entries when they reach the top, and compacts itself
/// when they make up half of it, so timeouts that never fire (the common case) cost
/// amortised O(1) each instead of staying in the heap until their far-off deadline.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Key>>,
    seq: u64,
    /// Cancelled entries still in `heap` (never fewer; see `Sleep::drop`).
    cancelled: Arc<AtomicUsize>,
}

impl Timers {
    pub(crate) fn insert(&mut self, deadline: Instant, entry: Arc<Entry>) {
        self.compact_if_mostly_cancelled();
        self.seq += 1;
        self.heap.push(Reverse(Key {
            deadline,
            seq: self.seq,
            entry,
        }));
    }

    pub(crate) fn new_entry(&self, waker: Waker) -> Arc<Entry> {
        Arc::new(Entry {
            state: AtomicU8::new(WAITING),
            waker: Mutex::new(Some(waker)),
            cancelled: self.cancelled.clone(),
        })
    }

    fn compact_if_mostly_cancelled(&mut self) {
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        if cancelled < COMPACT_MIN || cancelled * 2 < self.heap.len() {
            return;
        }
        let before = self.heap.len();
        self.heap
            .retain(|Reverse(key)| key.entry.state.load(Ordering::Acquire) != CANCELLED);
        self.cancelled
            .fetch_sub(before - self.heap.len(), Ordering::Relaxed);
    }

    /// Drops a popped entry; keeps the cancelled count in step.
    fn discard(&self, key: Key) {
        if key.entry.state.load(Ordering::Acquire) == CANCELLED {
            self.cancelled.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many entries the heap holds, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.entry.state.load(Ordering::Acquire) == CANCELLED {
                let Reverse(key) = self.heap.pop().expect("peeked");
                self.discard(key);
            } else {
                return Some(top.deadline);
            }
        }
        None
    }

    /// Removes every entry due at `now` and returns their wakers, to be woken by the
    /// caller once it no longer borrows the heap (a waker may set a new timer).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.deadline > now {
                break;
            }
            let Reverse(key) = self.heap.pop().expect("peeked");
            if key
                .entry
                .state
                .compare_exchange(WAITING, FIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                due.extend(key.entry.take_waker());
            } else {
                self.discard(key);
            }
        }
        due
    }
}

impl Drop for Timers {
    /// The thread is leaving the runtime (a worker stopping, `Runtime::run` returning)
    /// with sleeps still registered here: nobody would fire them. Wake each so it
    /// registers again wherever it is polled next, instead of hanging.
    fn drop(&mut self) {
        for Reverse(key) in self.heap.drain() {
            if key
                .entry
                .state
                .compare_exchange(WAITING, ORPHANED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if let Some(waker) = key.entry.take_waker() {
                    crate::wake::wake_catching_panics(waker);
                }
            }
        }
    }
}

/// Fires the due timers of the current runtime thread, if it is one.
pub(crate) fn fire_due(timers: &std::cell::RefCell<Timers>) {
    if timers.borrow().is_empty() {
        return;
    }
    let due = timers.borrow_mut().take_due(Instant::now());
    crate::wake::wake_all_catching_panics(due);
}

/// A future that completes at a deadline; see [`sleep`].
#[must_use = "futures do nothing unless polled or awaited"]
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    entry: Option<EntryHandle>,
}

/// Debug-printable wrapper so `Sleep` can derive Debug without exposing internals.
struct EntryHandle(Arc<Entry>);

impl std::fmt::Debug for EntryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerEntry")
    }
}

impl Sleep {
    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        if let Some(handle) = &self.entry {
            let entry = &handle.0;
            // The state is read under the waker's lock: the firing side changes the
            // state first and then takes the waker under the same lock, so either we
            // see FIRED/ORPHANED here, or it takes the waker we store. Reading the
            // state before locking would let it fire (taking the old waker) between
            // the read and the store, and the new waker would never be woken.
            let mut waker = entry.waker.lock().unwrap_or_else(|e| e.into_inner());
            match entry.state.load(Ordering::Acquire) {
                FIRED => return Poll::Ready(()),
                ORPHANED => {
                    drop(waker);
                    self.entry = None;
                }
                _ => {
                    match &*waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        }
        let deadline = self.deadline;
        let registered = crate::runtime::context::with_timers_for_sleep(|timers| {
            let mut timers = timers.borrow_mut();
            let entry = timers.new_entry(cx.waker().clone());
            timers.insert(deadline, entry.clone());
            entry
        });
        let Some(entry) = registered else {
            panic!(
                "greenrt::time::sleep polled outside a greenrt runtime: there is no \
                 timer to wake it (on a blocking-pool thread, only greenrt's own \
                 `block_on` fires timers). Await it inside `Runtime::block_on`, \
                 `#[greenrt::main]`, a green thread or a task spawned on a runtime, or \
                 with `greenrt::block_on`"
            );
        };
        self.entry = Some(EntryHandle(entry));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(handle) = &self.entry {
            cancel(&handle.0);
        }
    }
}

/// What dropping a registered [`Sleep`] does: marks its entry cancelled (unless it
/// fired or was orphaned) so the heap discards it.
pub(crate) fn cancel(entry: &Entry) {
    // Counted before the state changes, so the heap never sees a cancelled entry that
    // is not counted yet (the count would underflow when it discards it).
    entry.cancelled.fetch_add(1, Ordering::Relaxed);
    let cancelled = entry
        .state
        .compare_exchange(WAITING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if cancelled {
        // Release whatever the waker keeps alive (a task, a green thread) now, not when
        // the heap gets round to the entry.
        drop(entry.take_waker());
    } else {
        entry.cancelled.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until `duration` has elapsed, as a future for async code (`Send`).
///
/// Awaiting it parks nothing: the task is woken by the runtime thread that first polled
/// it. Polled where no greenrt runtime is running, it panics. Green threads call
/// [`greenrt::sleep`](crate::sleep) instead.
///
/// ```
/// use std::time::{Duration, Instant};
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// let start = Instant::now();
/// rt.block_on(greenrt::time::sleep(Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(duration))
}

/// The instant `duration` from now. A duration too long for `Instant` (such as
/// `Duration::MAX`, a common way to say "forever") gives an instant about 30 years
/// away instead of panicking on the overflow, as tokio does.
pub(crate) fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration).unwrap_or_else(|| far_future(now))
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(30 * 365 * 24 * 3600)
}

/// Waits until `deadline`, as a future for async code. See [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::ErrorKind::TimedOut.into()
    }
}

/// A future with a deadline; see [`timeout`].
#[must_use = "futures do nothing unless polled or awaited"]
#[derive(Debug)]
pub struct Timeout<F> {
    // Boxed so that `Timeout` is Unpin and needs no unsafe pin projection.
    future: Pin<Box<F>>,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let future = this.future.as_mut();
        let sleep = &mut this.sleep;
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `future` until it completes or `duration` passes, whichever is first. On
/// timeout the future is dropped and the result is `Err(Elapsed)`. The future is
/// polled first, so one that is already ready completes even with a zero duration.
///
/// ```
/// use std::time::Duration;
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// rt.block_on(async {
///     let slow = greenrt::time::sleep(Duration::from_secs(10));
///     assert!(greenrt::time::timeout(Duration::from_millis(10), slow).await.is_err());
///     assert_eq!(greenrt::time::timeout(Duration::from_secs(1), async { 5 }).await, Ok(5));
/// });
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future: Box::pin(future),
        sleep: sleep(duration),
    }
}

/// Fires every `period`; see [`interval`].
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
    sleep: Option<Sleep>,
}

impl Interval {
    /// Waits for the next tick and returns the instant it was scheduled for. The first
    /// tick completes at once. Missed ticks (the task was busy for longer than a
    /// period) fire one after the other until it has caught up (tokio's `Burst`).
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// The poll form of [`tick`](Interval::tick).
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let next = self.next;
        if Instant::now() < next {
            let sleep = self.sleep.get_or_insert_with(|| sleep_until(next));
            if Pin::new(sleep).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.sleep = None;
        self.next = next
            .checked_add(self.period)
            .unwrap_or_else(|| far_future(next));
        Poll::Ready(next)
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// A timer that fires now and then every `period`, for async code (green threads can
/// `greenrt::block_on(interval.tick())`).
///
/// # Panics
/// When `period` is zero.
///
/// ```
/// use std::time::{Duration, Instant};
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// let start = Instant::now();
/// rt.block_on(async {
///     let mut every = greenrt::time::interval(Duration::from_millis(10));
///     for _ in 0..3 {
///         every.tick().await;
///     }
/// });
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
pub fn interval(period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "greenrt::time::interval: the period must be non-zero"
    );
    Interval {
        next: Instant::now(),
        period,
        sleep: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::{waker, ArcWake};

    /// A waker that counts its wakes; its strong count shows who still holds it.
    struct Counter(AtomicUsize);

    impl ArcWake for Counter {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = waker(counter.clone());
        (counter, waker)
    }

    /// A `Sleep` registered with `timers`, as a first poll on its thread leaves it.
    fn registered(timers: &mut Timers, deadline: Instant, waker: Waker) -> Sleep {
        let entry = timers.new_entry(waker);
        timers.insert(deadline, entry.clone());
        Sleep {
            deadline,
            entry: Some(EntryHandle(entry)),
        }
    }

    #[test]
    fn dropped_sleeps_do_not_pile_up_in_the_heap() {
        let mut timers = Timers::default();
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        let (_, waker) = counter();
        let kept = registered(&mut timers, far, waker.clone());
        for _ in 0..10_000 {
            drop(registered(&mut timers, far, waker.clone()));
        }
        assert!(
            timers.len() <= 2 * COMPACT_MIN + 1,
            "{} entries left for 1 live sleep",
            timers.len()
        );
        assert_eq!(timers.next_deadline(), Some(kept.deadline()));
        drop(kept);
        assert_eq!(timers.next_deadline(), None);
        assert_eq!(timers.cancelled.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn dropping_a_sleep_releases_its_waker_at_once() {
        let mut timers = Timers::default();
        let (counter, waker) = counter();
        let sleep = registered(&mut timers, Instant::now() + Duration::from_secs(60), waker);
        assert_eq!(Arc::strong_count(&counter), 2);
        drop(sleep);
        assert_eq!(
            Arc::strong_count(&counter),
            1,
            "the heap still holds the waker"
        );
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            0,
            "a dropped sleep was woken"
        );
    }

    #[test]
    fn due_entries_fire_in_deadline_order_and_cancelled_ones_do_not() {
        let mut timers = Timers::default();
        let now = Instant::now();
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let (cancelled, cancelled_waker) = counter();
        let _b = registered(&mut timers, now + Duration::from_millis(2), second_waker);
        let _a = registered(&mut timers, now + Duration::from_millis(1), first_waker);
        drop(registered(&mut timers, now, cancelled_waker));
        let due = timers.take_due(now + Duration::from_millis(1));
        assert_eq!(due.len(), 1);
        due.into_iter().for_each(Waker::wake);
        assert_eq!(first.0.load(Ordering::SeqCst), 1);
        assert_eq!(second.0.load(Ordering::SeqCst), 0);
        assert_eq!(cancelled.0.load(Ordering::SeqCst), 0);
        assert_eq!(timers.next_deadline(), Some(now + Duration::from_millis(2)));
    }

    #[test]
    fn a_thread_leaving_the_runtime_wakes_its_pending_sleeps() {
        let mut timers = Timers::default();
        let (counter, waker) = counter();
        let sleep = registered(&mut timers, Instant::now() + Duration::from_secs(60), waker);
        drop(timers);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        let state = sleep.entry.as_ref().unwrap().0.state.load(Ordering::SeqCst);
        assert_eq!(state, ORPHANED);
    }
}
