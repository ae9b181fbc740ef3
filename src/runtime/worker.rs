//! A worker: one OS thread running green threads and future tasks.
//!
//! This module owns a worker's queues and its loop. Per worker:
//! - `deque`: a `crossbeam_deque::Worker` of *stealable* work: green threads that have
//!   not started yet and future tasks. Other workers steal from its `Stealer`.
//! - `run_queue`: the worker's *private* queue of its started green threads. Nobody else
//!   can reach it: a started green thread never runs on another OS thread.
//! - `inbox` (in [`WorkerShared`]): where other threads put this worker's started green
//!   threads when they wake them.
//! - `live`: every started, unfinished green thread at home here, so shutdown can
//!   cancel them.
//! - `recycler`: the control blocks of green threads that finished here with nothing
//!   else referencing them, for the next spawns on this worker (`super::recycle`).
//!
//! The loop, each tick: every [`GLOBAL_INTERVAL`] ticks fire due timers, drain the inbox
//! and take one task from the injector first (so nothing outside starves); otherwise
//! alternate between the private run queue and the deque (so neither starves the
//! other), then the inbox; when all are empty, search (injector, then steal a batch from
//! the others), and when that finds nothing, park until woken, the next timer is due
//! or the next trim of the stack pool or the control-block cache
//! (`StackPool::trim_if_due`, `Recycler::trim_if_due`, also run every
//! [`TRIM_INTERVAL`] ticks), whichever comes first.
//! A green thread that yields does not go back through that loop when its tick would
//! pick the private run queue anyway (`Core::next_after_yield` takes the same tick and
//! the same choice): the yield round trip is then a requeue, a pop and two switches.
//! Parking blocks in the reactor's `epoll_wait` when this worker gets the poll lock
//! (`crate::reactor`); every [`GLOBAL_INTERVAL`] ticks the reactor is also polled
//! without blocking, next to the timers.
//!
//! One green thread is resumed from somewhere other than this loop: `spawn(f).join()`
//! on a worker runs the child straight from the joiner's stack while the child is still
//! in the LIFO slot ([`Core::run_child_inline`]). The rules it keeps are the loop's: the
//! child is held RUNNING, runs on this worker's thread, which becomes its home, and
//! goes idle or back to a queue only after it has switched off its own stack (to the
//! joiner's, on the same thread). design.md's "every resume switches from the
//! worker's scheduler context" is relaxed to that one case.
//!
//! It must never resume a green thread whose home is another worker, and never hold a
//! `RefCell` borrow across a switch into a green thread (green code may push onto the
//! same queues, and a joiner may re-enter this worker's methods).

use super::context::Local;
use super::Shared;
use crate::green::{self, GreenThread, Home, Start, Suspend};
use crate::stack::{SparePlaces, StackPool};
use crate::state::{AfterRun, CANCELLED};
use crate::task::Task;
use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

/// How often (in ticks) the injector, inbox and timers are checked first.
const GLOBAL_INTERVAL: u32 = 61;
/// How often (in ticks) a busy worker lets its stack pool trim. A trim check reads the
/// clock (some 20–40 ns here), which every [`GLOBAL_INTERVAL`] ticks would add about 4%
/// to a yield; the pool's decay period is a second, and a worker that parks checks
/// then anyway.
const TRIM_INTERVAL: u32 = 16 * GLOBAL_INTERVAL;

/// The parts of a worker other threads reach.
pub(crate) struct WorkerShared {
    pub(crate) stealer: Stealer<Task>,
    pub(crate) inbox: Injector<Arc<GreenThread>>,
    pub(crate) thread: OnceLock<Thread>,
}

impl WorkerShared {
    pub(crate) fn new(stealer: Stealer<Task>) -> WorkerShared {
        WorkerShared {
            stealer,
            inbox: Injector::new(),
            thread: OnceLock::new(),
        }
    }

    pub(crate) fn unpark(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// The started, unfinished green threads at home on one worker.
#[derive(Default)]
struct LiveTable {
    slots: Vec<Option<Arc<GreenThread>>>,
    free: Vec<usize>,
}

impl LiveTable {
    fn insert(&mut self, green: Arc<GreenThread>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(green);
                slot
            }
            None => {
                self.slots.push(Some(green));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if self.slots.get_mut(slot).and_then(Option::take).is_some() {
            self.free.push(slot);
        }
    }

    fn drain(&mut self) -> Vec<Arc<GreenThread>> {
        self.free.clear();
        self.slots.drain(..).flatten().collect()
    }
}

/// An entry of the private run queue.
pub(crate) struct Runnable {
    pub(crate) green: Arc<GreenThread>,
    /// It yielded and is still RUNNING (see `Core::run_green`), rather than SCHEDULED.
    pub(crate) yielded: bool,
}

/// A worker's own state, on its thread only.
pub(crate) struct Core {
    pub(crate) index: usize,
    shared: Arc<Shared>,
    pub(crate) deque: Worker<Task>,
    pub(crate) run_queue: RefCell<VecDeque<Runnable>>,
    /// The unit this worker itself just spawned or woke: it runs next, while its data
    /// is hot in cache and without waking another worker for it (see [`Core::push_lifo`]).
    lifo: Cell<Option<Next>>,
    /// Whether `lifo` holds a unit: a flag, so the hot paths can ask without moving the
    /// unit out and back.
    lifo_full: Cell<bool>,
    /// How many units in a row came from `lifo`; capped so two green threads or tasks
    /// waking each other cannot starve the rest of the queues.
    lifo_streak: Cell<u32>,
    /// What the green threads started here point to as their home.
    pub(crate) home: Arc<WorkerHome>,
    stacks: RefCell<StackPool>,
    /// Spare places in the process's live budget, for green threads spawned on this
    /// thread (into any runtime: the budget is the process's).
    pub(crate) spare_places: SparePlaces,
    live: RefCell<LiveTable>,
    /// Control blocks of green threads that finished here, for spawns on this worker.
    pub(crate) recycler: super::recycle::Recycler,
    tick: Cell<u32>,
    searching: Cell<bool>,
    rng: Cell<u32>,
}

/// The home of the green threads a worker started: each holds a clone of its worker's
/// `Arc<WorkerHome>`, which keeps the runtime alive for wakes from anywhere. One per
/// worker, so starting and freeing green threads bumps a count only that worker
/// touches, not the runtime's, which every worker shares.
pub(crate) struct WorkerHome {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
}

/// Hides the cache misses of resuming green threads that went cold while queued (a
/// server with thousands of connections touches a different stack and control block on
/// every turn): the next one's stack lines, whose saved pointer the previous call
/// brought in, and the one after's control block. Two turns of lookahead, because the
/// stack address is only known once the control block has arrived.
#[inline]
fn prefetch_upcoming(run_queue: &VecDeque<Runnable>) {
    if let Some(next) = run_queue.front() {
        // SAFETY: the private run queue holds only started green threads whose home is
        // this worker, and none of them runs while it is queued.
        unsafe { next.green.prefetch_stack() };
    }
    if let Some(after) = run_queue.get(1) {
        after.green.prefetch_control_block();
    }
}

/// Entry point of a worker thread.
pub(crate) fn run(shared: Arc<Shared>, index: usize, deque: Worker<Task>) {
    crate::overflow::ensure_alt_stack();
    let _ = shared.workers[index].thread.set(std::thread::current());
    let core = Core {
        index,
        shared: shared.clone(),
        deque,
        run_queue: RefCell::new(VecDeque::new()),
        lifo: Cell::new(None),
        lifo_full: Cell::new(false),
        lifo_streak: Cell::new(0),
        home: Arc::new(WorkerHome {
            shared: shared.clone(),
            index,
        }),
        stacks: RefCell::new(StackPool::new(shared.config.stack_size)),
        spare_places: SparePlaces::default(),
        live: RefCell::default(),
        recycler: Default::default(),
        tick: Cell::new(0),
        searching: Cell::new(false),
        rng: Cell::new(0x9E37_79B9 ^ (index as u32).wrapping_mul(0x85EB_CA6B) | 1),
    };
    let local = Local {
        handle: super::Handle {
            shared: shared.clone(),
        },
        timers: RefCell::default(),
        worker: Some(core),
        blocking_pool: false,
    };
    run_core(&local);
    drop(local);
    // Out of the runtime's context and done with the core: maybe the final sweep.
    shared.worker_exited();
}

/// Runs the worker's core until shutdown, then cancels what it owns.
fn run_core(local: &Local) {
    let _enter = super::context::enter(local);
    let core = local.worker.as_ref().expect("worker core");
    // Green threads, futures and the panics of both are caught where they run, so a
    // panic reaching this frame came from code the scheduler itself calls: a tracing
    // subscriber's callback (at a switch or a scheduler event), or a waker or destructor
    // it runs. Unwinding on would end the worker and strand, forever, every green
    // thread that started here (they never move to another worker): a hang with no
    // error. Abort instead, saying why; the panic's own message is already printed.
    let bomb = crate::green::AbortOnUnwind::new(
        "a panic unwound out of a worker's scheduler loop (see the panic message above, \
         which names the worker thread: it came from code the scheduler calls, such as a \
         tracing subscriber's callback at a switch or a waker or destructor it ran); \
         without that worker the green threads started on it could never run again",
    );
    core.run_loop(local);
    core.shutdown();
    bomb.disarm();
    #[cfg(feature = "tracing")]
    crate::trace::worker_idle();
}

impl Core {
    /// The worker's loop. Green threads are resumed from this frame itself (`run_task`,
    /// `run_green` and `resume_loop` are inlined here): it never returns while green
    /// threads run, so when one switches back, the return addresses it pushed on the way
    /// into its suspend call stay on the CPU's return-stack predictor, and the next green
    /// thread resumed from the same call site (a server's connections all wait in the
    /// same `read`) finds them there. Returning from a frame after each switch, and
    /// calling one before the next, would pop them and push others: mispredicted returns
    /// on both sides.
    fn run_loop(&self, local: &Local) {
        loop {
            if self.shared.is_shutdown() {
                return;
            }
            let next = match self.next_local(local) {
                Some(task) => task,
                None => match self.search(local) {
                    Some(task) => task,
                    None => {
                        self.park(local);
                        continue;
                    }
                },
            };
            self.run_task(next);
        }
    }

    /// The next task from this worker's own queues (and, periodically, the injector).
    fn next_local(&self, local: &Local) -> Option<Next> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if let Some(next) = self.take_lifo() {
            if self.lifo_streak.get() < MAX_LIFO_STREAK {
                self.lifo_streak.set(self.lifo_streak.get() + 1);
                return Some(next);
            }
            // Enough favouritism: back of the line, where others can reach it.
            self.lifo_streak.set(0);
            self.push_queued(next);
        } else {
            self.lifo_streak.set(0);
        }
        if tick.is_multiple_of(GLOBAL_INTERVAL) {
            crate::time::fire_due(&local.timers);
            if tick.is_multiple_of(TRIM_INTERVAL) {
                self.trim_caches();
            }
            // I/O readiness, so it is not starved while every worker is busy.
            if self.shared.reactor.has_registrations() {
                if let Some(ready) = self.shared.reactor.poll_now() {
                    crate::reactor::wake_all(ready);
                    // Nobody was driving: hand the reactor to a sleeper, if any.
                    self.shared.hand_off_reactor();
                }
            }
            self.drain_inbox();
            if let Some(task) = steal_one(|| self.shared.injector.steal()) {
                return Some(Next::Task(task));
            }
        }
        if tick % 2 == 1 {
            if let Some(runnable) = self.pop_run_queue() {
                return Some(Next::Started(runnable));
            }
        }
        if let Some(task) = self.deque.pop() {
            return Some(Next::Task(task));
        }
        if let Some(runnable) = self.pop_run_queue() {
            return Some(Next::Started(runnable));
        }
        self.drain_inbox();
        self.pop_run_queue().map(Next::Started)
    }

    /// Queues a woken green thread whose home is this worker to run next.
    pub(crate) fn schedule_started_here(&self, green: Arc<GreenThread>) {
        // The waker just wrote its state word; ask for the rest of the control block
        // now, so that its saved stack pointer is in cache when [`prefetch_upcoming`]
        // wants it (a reactor poll wakes many at once, and they run in turn).
        green.prefetch_control_block();
        let displaced = self.push_lifo(Next::Started(Runnable {
            green,
            yielded: false,
        }));
        // As in `Shared::schedule`: stealable work pushed out of the LIFO slot is worth
        // a thief.
        if displaced {
            self.shared.notify_one();
        }
    }

    /// Makes `next` the unit this worker runs next. Returns true when that displaced
    /// stealable work onto the deque, so an idle worker may want to know (a displaced
    /// started green thread goes to the private run queue: only this worker can run it).
    pub(crate) fn push_lifo(&self, next: Next) -> bool {
        self.lifo_full.set(true);
        match self.lifo.replace(Some(next)) {
            Some(previous) => {
                let stealable = matches!(previous, Next::Task(_));
                self.push_queued(previous);
                stealable
            }
            None => false,
        }
    }

    /// The normal place for a unit: started green threads to the private run queue,
    /// stealable work to the deque.
    fn push_queued(&self, next: Next) {
        match next {
            Next::Started(runnable) => self.run_queue.borrow_mut().push_back(runnable),
            Next::Task(task) => self.deque.push(task),
        }
    }

    fn pop_run_queue(&self) -> Option<Runnable> {
        let mut run_queue = self.run_queue.borrow_mut();
        let next = run_queue.pop_front();
        prefetch_upcoming(&run_queue);
        next
    }

    fn drain_inbox(&self) {
        let inbox = &self.shared.workers[self.index].inbox;
        if inbox.is_empty() {
            return;
        }
        let mut run_queue = self.run_queue.borrow_mut();
        while let Some(green) = steal_one(|| inbox.steal()) {
            run_queue.push_back(Runnable {
                green,
                yielded: false,
            });
        }
    }

    /// Looks for work beyond this worker's queues: due timers, the injector, then the
    /// other workers' deques.
    fn search(&self, local: &Local) -> Option<Next> {
        crate::time::fire_due(&local.timers);
        if let Some(next) = self.next_local(local) {
            return Some(next);
        }
        if !self.searching.get() {
            self.searching.set(true);
            self.shared.idle.start_searching();
        }
        if let Some(task) = steal_one(|| self.shared.injector.steal_batch_and_pop(&self.deque)) {
            return Some(Next::Task(task));
        }
        let workers = &self.shared.workers;
        let start = self.next_random() as usize % workers.len();
        for offset in 0..workers.len() {
            let victim = (start + offset) % workers.len();
            if victim == self.index {
                continue;
            }
            if let Some(task) =
                steal_one(|| workers[victim].stealer.steal_batch_and_pop(&self.deque))
            {
                #[cfg(feature = "tracing")]
                if let Task::Green(green) = &task {
                    crate::trace::sched_event("steal", green.identity.id());
                }
                return Some(Next::Task(task));
            }
        }
        None
    }

    fn next_random(&self) -> u32 {
        // xorshift32: cheap, and good enough to spread steal victims.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }

    /// Whether anything is runnable for this worker (checked after registering as a
    /// sleeper, before parking).
    fn has_work(&self, local: &Local) -> bool {
        let shared = &self.shared;
        shared.is_shutdown()
            || self.has_lifo()
            || !self.deque.is_empty()
            || !self.run_queue.borrow().is_empty()
            || !shared.workers[self.index].inbox.is_empty()
            || !shared.injector.is_empty()
            || shared.workers.iter().any(|w| !w.stealer.is_empty())
            || local
                .timers
                .borrow_mut()
                .next_deadline()
                .is_some_and(|d| d <= Instant::now())
    }

    /// Lets the stack pool unmap stacks nobody used for a while (see
    /// [`StackPool::trim_if_due`]), and the control-block cache free blocks nobody
    /// took (`Recycler::trim_if_due`); returns when they want to be asked again.
    fn trim_caches(&self) -> Option<Instant> {
        let stacks = self.stacks.borrow_mut().trim_if_due(Instant::now);
        let blocks = self.recycler.trim_if_due(Instant::now);
        stacks.into_iter().chain(blocks).min()
    }

    fn has_lifo(&self) -> bool {
        self.lifo_full.get()
    }

    fn take_lifo(&self) -> Option<Next> {
        if !self.lifo_full.replace(false) {
            return None;
        }
        self.lifo.take()
    }

    fn park(&self, local: &Local) {
        if self.searching.replace(false) {
            self.shared.idle.stop_searching();
        }
        // While it sleeps nothing would return its spares to a spawner short of room.
        self.spare_places.give_back_if_tight();
        // Wake up for the next trim too: an idle worker is exactly the one whose pooled
        // stacks nothing uses. Trimmed before registering as a sleeper, so a wake meant
        // for us never waits on our munmaps.
        let next_trim = self.trim_caches();
        let idle = &self.shared.idle;
        idle.register_sleeper(self.index);
        let next_timer = local.timers.borrow_mut().next_deadline();
        let deadline = next_timer.into_iter().chain(next_trim).min();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // Whoever gets the poll lock waits in epoll_wait (and does the last check for
        // work after publishing itself as the driver: see `Reactor::park`); the others
        // park the thread as before.
        #[cfg(feature = "tracing")]
        let trace_park = || {
            crate::trace::worker_idle();
            crate::trace::park_event(self.index, &self.shared.trace_dispatch);
        };
        let ready = self.shared.reactor.park(self.index, timeout, || {
            let has_work = !idle.may_block(self.index, || self.has_work(local));
            #[cfg(feature = "tracing")]
            if !has_work {
                trace_park();
            }
            has_work
        });
        let drove = ready.is_some();
        let ready = match ready {
            Some(ready) => ready,
            None => {
                if idle.may_block(self.index, || self.has_work(local)) {
                    #[cfg(feature = "tracing")]
                    trace_park();
                    match timeout {
                        Some(timeout) if timeout.is_zero() => {}
                        Some(timeout) => std::thread::park_timeout(timeout),
                        None => std::thread::park(),
                    }
                }
                Vec::new()
            }
        };
        if idle.unregister(self.index) {
            // A notifier picked us and counted us as searching.
            self.searching.set(true);
        }
        // Readiness wakes go through the waiters' own wakers: a started green thread
        // lands on its owner worker (our LIFO slot when that is us).
        crate::reactor::wake_all(ready);
        if drove && self.has_work(local) {
            // We leave the poll to run work: another worker must drive it meanwhile.
            self.shared.hand_off_reactor();
        }
    }

    #[inline(always)]
    fn run_task(&self, next: Next) {
        if self.searching.replace(false) && self.shared.idle.stop_searching() {
            // The last searcher found work: hand the search to another worker in case
            // more is queued.
            self.shared.notify_one();
        }
        // One call site for run_green, which is inlined.
        let (green, yielded) = match next {
            Next::Started(Runnable { green, yielded }) => (green, yielded),
            Next::Task(Task::Green(green)) => (green, false),
            Next::Task(Task::Future(task)) => {
                task.run(|task| self.deque.push(Task::Future(task)));
                return;
            }
        };
        self.run_green(green, yielded);
    }

    /// Runs a green thread until it suspends. `yielded`: it is coming back from a
    /// yield, still RUNNING (a yield leaves the state word alone: the green thread sits
    /// in this worker's private queue, which nobody else can reach, and a wake meanwhile
    /// only sets NOTIFIED). Otherwise it was SCHEDULED and we take it to RUNNING.
    #[inline(always)]
    fn run_green(&self, green: Arc<GreenThread>, yielded: bool) {
        let previous = if yielded {
            debug_assert!(green.state.load() & crate::state::RUNNING != 0);
            crate::state::RUNNING
        } else {
            green.state.start_run()
        };
        // SAFETY: we hold it RUNNING (start_run above).
        if !unsafe { green.is_started() } && !self.start_green(&green, previous) {
            return;
        }
        self.resume_loop(green);
    }

    /// First run of a green thread we hold RUNNING: gives it a stack and makes this
    /// worker its home. Returns false when it finished without running (cancelled
    /// before it started, or no stack could be mapped).
    #[cold]
    fn start_green(&self, green: &Arc<GreenThread>, previous: usize) -> bool {
        if previous & CANCELLED != 0 {
            // SAFETY: we hold it RUNNING and it never started.
            unsafe { green.finish_unstarted(Start::Cancel) };
            green.state.complete();
            return false;
        }
        let stack = self.stacks.borrow_mut().take(green.stack_size);
        match stack {
            Ok(stack) => {
                let slot = self.live.borrow_mut().insert(green.clone());
                let home = Home::Worker(self.home.clone());
                // SAFETY: we hold it RUNNING, it never started, and every later
                // resume happens on this thread: its home is this worker.
                unsafe { GreenThread::prepare(green, stack, home, slot) };
                true
            }
            Err(error) => {
                // SAFETY: we hold it RUNNING and it never started.
                unsafe { green.finish_unstarted(Start::Fail(error)) };
                green.state.complete();
                false
            }
        }
    }

    /// Resumes `green` (held RUNNING, started, at home here) until it suspends; when it
    /// yields, goes on with [`Core::next_after_yield`]'s pick without a trip through
    /// the main loop.
    #[inline(always)]
    fn resume_loop(&self, mut green: Arc<GreenThread>) {
        loop {
            // SAFETY: we hold it RUNNING and an Arc to it for the whole call, it is
            // prepared, and its home is this worker (it was prepared here or popped
            // from this worker's private queue or inbox, which only hold greens at
            // home here).
            let why = unsafe { green::resume(&green) };
            match why {
                Suspend::Yield => match self.next_after_yield(green) {
                    Some(next) => green = next,
                    None => return,
                },
                Suspend::Park => {
                    self.after_park(green);
                    return;
                }
                Suspend::Complete => {
                    self.reclaim(&green);
                    self.recycler.keep(green);
                    return;
                }
            }
        }
    }

    /// After `green` (started, at home here) switched out to wait: it goes idle, or
    /// back to the queue when a wake came while it was running.
    fn after_park(&self, green: Arc<GreenThread>) {
        if green.state.stop_running() == AfterRun::Requeue {
            self.run_queue.borrow_mut().push_back(Runnable {
                green,
                yielded: false,
            });
        }
    }

    /// Whether `green` started on this worker (and has not finished): only this
    /// worker's thread can run it. A linear scan: asked only by a join that may not
    /// wait ([`super::join_cannot_wait`]).
    pub(crate) fn is_at_home_here(&self, green: &GreenThread) -> bool {
        self.live
            .borrow()
            .slots
            .iter()
            .flatten()
            .any(|live| std::ptr::addr_eq(Arc::as_ptr(live), green as *const GreenThread))
    }

    /// Moves what waits in the LIFO slot to where it can be run by others (unstarted
    /// work to the stealable deque, waking a thief) or at least by this worker's
    /// normal turn: before this worker's thread blocks for a green thread that is
    /// unwinding (see `crate::bridge`).
    pub(crate) fn release_lifo(&self) {
        if let Some(next) = self.take_lifo() {
            let stealable = matches!(next, Next::Task(_));
            self.push_queued(next);
            if stealable {
                self.shared.notify_one();
            }
        }
    }

    /// See [`super::run_child_before_join`]: if `child` is the unstarted green thread
    /// in the LIFO slot, takes it out and runs it here until it first switches out.
    /// The caller is a green thread running on this worker, so the child's first
    /// resumer is that green thread rather than the worker loop: when the child
    /// suspends it switches back to the joiner's stack, and this function queues it as
    /// the loop would have. Its home is this worker either way.
    pub(crate) fn run_child_inline(&self, child: &GreenThread) {
        let queued = match self.lifo.take() {
            Some(Next::Task(Task::Green(queued)))
                if std::ptr::addr_eq(Arc::as_ptr(&queued), child as *const GreenThread) =>
            {
                queued
            }
            other => {
                self.lifo.set(other);
                return;
            }
        };
        self.lifo_full.set(false);
        // A green thread in the stealable queues has never run: the state word says
        // SCHEDULED (or CANCELLED too, which `start_green` handles).
        let previous = queued.state.start_run();
        if !self.start_green(&queued, previous) {
            return;
        }
        // SAFETY: we hold it RUNNING (start_run above), it is prepared (start_green),
        // its home is this worker, whose thread we are on (the caller is a green thread
        // running here), and `queued` keeps it alive for the call.
        match unsafe { green::resume(&queued) } {
            Suspend::Yield => self.run_queue.borrow_mut().push_back(Runnable {
                green: queued,
                yielded: true,
            }),
            Suspend::Park => self.after_park(queued),
            Suspend::Complete => {
                self.reclaim(&queued);
                self.recycler.finished_held();
            }
        }
    }

    /// After `green` yielded: requeues it at the back of the private run queue and,
    /// when the main loop's next tick would pick from that queue anyway, takes that
    /// tick here and returns the green thread it would pick, held RUNNING (the front
    /// of the queue, or `green` itself when the queue was empty). Returns None (the
    /// main loop decides) when the LIFO slot is full, the next tick is a
    /// [`GLOBAL_INTERVAL`] one, the deque would be looked at first, or shutdown began.
    /// Same order as [`Core::next_local`], without its round trip.
    #[inline]
    fn next_after_yield(&self, green: Arc<GreenThread>) -> Option<Arc<GreenThread>> {
        let tick = self.tick.get().wrapping_add(1);
        let local_turn = !tick.is_multiple_of(GLOBAL_INTERVAL)
            && (tick % 2 == 1 || self.deque.is_empty())
            && !self.has_lifo()
            && !self.shared.is_shutdown();
        let mut run_queue = self.run_queue.borrow_mut();
        if !local_turn {
            run_queue.push_back(Runnable {
                green,
                yielded: true,
            });
            return None;
        }
        self.tick.set(tick);
        self.lifo_streak.set(0);
        let Some(next) = run_queue.pop_front() else {
            // Alone here: it runs again.
            return Some(green);
        };
        run_queue.push_back(Runnable {
            green,
            yielded: true,
        });
        prefetch_upcoming(&run_queue);
        drop(run_queue);
        if !next.yielded {
            // Woken (inbox or a requeue after a wake): SCHEDULED, and started, since only
            // started green threads are in the private queue.
            next.green.state.start_run();
        }
        Some(next.green)
    }

    /// Takes back what a finished green thread held, then tells its JoinHandle.
    fn reclaim(&self, green: &GreenThread) {
        green.state.complete();
        // SAFETY: it switched out with Complete; we hold it.
        let finished = unsafe { green.take_finished() };
        self.live.borrow_mut().remove(finished.slot);
        if let Some(stack) = finished.stack {
            self.stacks.borrow_mut().put(stack);
        }
        if let Some(reservation) = finished.reservation {
            self.spare_places.release(reservation);
        }
        // SAFETY: as above.
        unsafe { green.publish_outcome() };
    }

    /// Cancels everything at home here, then empties this worker's queues.
    fn shutdown(&self) {
        if let Some(next) = self.take_lifo() {
            self.push_queued(next);
        }
        let live = self.live.borrow_mut().drain();
        for green in live {
            if !green.state.claim_for_shutdown() {
                continue;
            }
            #[cfg(feature = "tracing")]
            crate::trace::sched_event("cancel", green.identity.id());
            if cfg!(panic = "abort") {
                // Nothing can unwind: resumed, it would abort the process at its
                // cancellation point. Leak it, as the docs promise for this build.
                // SAFETY: its home thread; we hold it and never resume it again.
                unsafe { green.leak() };
                continue;
            }
            // SAFETY: we hold it RUNNING (claimed), it is prepared and at home here.
            let why = unsafe { green::resume(&green) };
            if why == Suspend::Complete {
                self.reclaim(&green);
            } else {
                // It caught the cancellation and suspended again: it will never be
                // resumed, so its stack must never be freed.
                // SAFETY: its home thread; we never resume it again.
                unsafe { green.leak() };
                eprintln!(
                    "greenrt: green thread {} ignored cancellation at shutdown and suspended \
                     again; its stack is leaked",
                    green.identity.id()
                );
            }
        }
        self.run_queue.borrow_mut().clear();
        let inbox = &self.shared.workers[self.index].inbox;
        while steal_one(|| inbox.steal()).is_some() {}
        while let Some(task) = self.deque.pop() {
            super::cancel_queued(task);
        }
        self.shared.drain_injector();
    }
}

/// Consecutive units a worker may take from its LIFO slot (tokio uses 3 too).
const MAX_LIFO_STREAK: u32 = 3;

/// What the loop runs next.
pub(crate) enum Next {
    /// A started green thread from the private queue.
    Started(Runnable),
    /// Stealable work: an unstarted green thread or a future task.
    Task(Task),
}

/// Retries a steal until it succeeds or finds the queue empty.
pub(crate) fn steal_one<T>(mut steal: impl FnMut() -> Steal<T>) -> Option<T> {
    loop {
        match steal() {
            Steal::Success(item) => return Some(item),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}
