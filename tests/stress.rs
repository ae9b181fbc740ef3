//! Randomized stress: thousands of green threads and future tasks doing random
//! sequences of spawn (green or task), yield, short sleeps, waits on futures channels
//! (mpsc bounded and unbounded, oneshot) fed by green threads, by tasks and by foreign
//! OS threads, joins, and panics caught by joins; on 1, 2 and 4 workers.
//!
//! Reproducible: a seed fixes the whole plan (the tree of units, each unit's operations,
//! every value sent, which units panic or are detached) before anything runs, so the
//! outcome of every unit is known in advance and checked: each join returns exactly
//! the planned sum or the planned panic payload, every unit finishes, the detached ones
//! included. The interleaving is up to the machine; a failure names its seed, and
//! `GREENRT_STRESS_SEED=<seed>` runs that seed again (decimal or 0x-hex).
//!
//! A watchdog (the test's own thread) fails the test when no unit makes progress for
//! `GREENRT_STRESS_STALL_SECS` (default 20), with a dump of every unit still pending:
//! its kind, the operation it is blocked in and for how long.
//!
//! ```text
//! cargo test --test stress                                   # a few seeds per worker count
//! cargo test --release --test stress -- --ignored stress     # 100 seeds per worker count
//! GREENRT_STRESS_SEED=0x2a cargo test --test stress          # one seed, 1, 2 and 4 workers
//! ```
//! `GREENRT_STRESS_UNITS` sets how many units a seed plans (default 5000).

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use greenrt::runtime::Builder;
use greenrt::JoinHandle;
use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Seeds per worker count in the default run.
const QUICK_SEEDS: u64 = 8;
/// Seeds per worker count in `stress_many_seeds`.
const MANY_SEEDS: u64 = 100;
/// First seed of the default run and of `stress_many_seeds` (unless overridden).
const QUICK_BASE: u64 = 1;
const MANY_BASE: u64 = 1000;
/// Units a seed plans (green threads, tasks and channel feeders).
const DEFAULT_UNITS: usize = 5000;
/// How deep units spawn units.
const MAX_DEPTH: usize = 5;
/// Foreign OS threads that feed channels.
const FOREIGN_THREADS: usize = 3;
/// Payload prefix of the planned string panics.
const PANIC_PREFIX: &str = "stress: planned panic of unit ";

#[test]
fn stress_1_worker() {
    run_seeds(1, quick_seeds());
}

#[test]
fn stress_2_workers() {
    run_seeds(2, quick_seeds());
}

#[test]
fn stress_4_workers() {
    run_seeds(4, quick_seeds());
}

#[test]
#[ignore = "long: 100 seeds per worker count; run with \
            `cargo test --release --test stress -- --ignored stress`"]
fn stress_many_seeds() {
    let base = env_seed().unwrap_or(MANY_BASE);
    let seeds: Vec<u64> = (base..base + MANY_SEEDS).collect();
    for workers in [1, 2, 4] {
        let start = Instant::now();
        run_seeds(workers, seeds.clone());
        eprintln!(
            "stress: {} seeds ({:#x}..={:#x}) on {workers} workers passed in {:.1?}",
            seeds.len(),
            seeds[0],
            seeds[seeds.len() - 1],
            start.elapsed()
        );
    }
}

fn quick_seeds() -> Vec<u64> {
    match env_seed() {
        Some(seed) => vec![seed],
        None => (QUICK_BASE..QUICK_BASE + QUICK_SEEDS).collect(),
    }
}

fn env_seed() -> Option<u64> {
    let raw = std::env::var("GREENRT_STRESS_SEED").ok()?;
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("GREENRT_STRESS_SEED={raw:?} is not a number")))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn run_seeds(workers: usize, seeds: Vec<u64>) {
    let units = env_number("GREENRT_STRESS_UNITS", DEFAULT_UNITS as u64) as usize;
    for seed in seeds {
        run_seed(seed, workers, units);
    }
}

// ---------------------------------------------------------------------------------
// The PRNG: xorshift64*, seeded through splitmix64 so nearby seeds differ everywhere.
// ---------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 32) % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------
// The plan: fixed by the seed before anything runs.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Green,
    Task,
    Foreign,
}

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Green => "green thread",
            Kind::Task => "future task",
            Kind::Foreign => "foreign-thread feeder",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Chan {
    Oneshot,
    /// futures' bounded mpsc with this buffer (0 still holds one message per sender).
    Bounded(usize),
    Unbounded,
}

/// Something that sends `values` on a fresh channel for a unit to receive.
#[derive(Debug)]
struct Feeder {
    id: u32,
    kind: Kind,
    chan: Chan,
    values: Vec<u64>,
    /// Before sending: 0 nothing, 1 yield, 2 sleep `sleep_us`.
    delay: u8,
    sleep_us: u64,
    /// Yield between sends (and, on the receiving side, between receives).
    yield_between: bool,
}

#[derive(Debug)]
enum Op {
    Spawn(Arc<Plan>),
    Yield,
    Sleep(u64),
    Recv(Arc<Feeder>),
    /// Join the oldest child not joined yet.
    Join,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Spawn(_) => "spawn",
            Op::Yield => "yield",
            Op::Sleep(_) => "sleep",
            Op::Recv(feeder) => match (feeder.kind, feeder.chan) {
                (Kind::Green, Chan::Oneshot) => "recv oneshot fed by a green thread",
                (Kind::Green, Chan::Bounded(_)) => "recv bounded mpsc fed by a green thread",
                (Kind::Green, Chan::Unbounded) => "recv unbounded mpsc fed by a green thread",
                (Kind::Task, Chan::Oneshot) => "recv oneshot fed by a task",
                (Kind::Task, Chan::Bounded(_)) => "recv bounded mpsc fed by a task",
                (Kind::Task, Chan::Unbounded) => "recv unbounded mpsc fed by a task",
                (Kind::Foreign, Chan::Oneshot) => "recv oneshot fed by a foreign thread",
                (Kind::Foreign, Chan::Bounded(_)) => "recv bounded mpsc fed by a foreign thread",
                (Kind::Foreign, Chan::Unbounded) => "recv unbounded mpsc fed by a foreign thread",
            },
            Op::Join => "join",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Return,
    /// `panic_any(String)` with [`PANIC_PREFIX`] and the unit's id.
    PanicString,
    /// `panic_any(StressPanic(id))`.
    PanicStruct,
}

#[derive(Debug, PartialEq, Eq)]
struct StressPanic(u32);

/// One green thread or future task.
#[derive(Debug)]
struct Plan {
    id: u32,
    kind: Kind,
    base: u64,
    ops: Vec<Op>,
    ending: Ending,
    /// Its parent drops the JoinHandle at once.
    detached: bool,
    /// What it returns (when it does not panic): base + everything it received + the
    /// results of the children it joined.
    expected: u64,
}

impl Plan {
    /// What its parent's sum gains by joining it.
    fn contribution(&self) -> u64 {
        if self.ending == Ending::Return {
            self.expected
        } else {
            0
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    /// Units per kind (green threads include feeders; tasks too; foreign = feeder jobs).
    units: [usize; 3],
    joined_panics: usize,
    detached: usize,
    /// Sum of the results of the detached units that return.
    detached_sum: u64,
    ops: usize,
}

struct Planner {
    rng: Rng,
    next_id: u32,
    budget: usize,
    totals: Totals,
}

impl Planner {
    fn new_id(&mut self, kind: Kind) -> u32 {
        self.budget = self.budget.saturating_sub(1);
        self.totals.units[kind.index()] += 1;
        self.next_id += 1;
        self.next_id
    }

    fn root(seed: u64, units: usize) -> (Arc<Plan>, Totals) {
        let mut planner = Planner {
            rng: Rng::new(seed),
            next_id: 0,
            budget: units,
            totals: Totals::default(),
        };
        let root = planner.unit(Kind::Green, 0, false);
        (root, planner.totals)
    }

    fn random_kind(&mut self) -> Kind {
        if self.rng.chance(55) {
            Kind::Green
        } else {
            Kind::Task
        }
    }

    fn unit(&mut self, kind: Kind, depth: usize, detached: bool) -> Arc<Plan> {
        let id = self.new_id(kind);
        let base = self.rng.below(1 << 16);
        let mut ops = Vec::new();
        let mut expected = base;
        let mut unjoined: VecDeque<Arc<Plan>> = VecDeque::new();
        if depth == 0 {
            // The root spawns until the budget is spent, joining now and then, so
            // hundreds of units are alive at once.
            while self.budget > 0 {
                let op = match self.rng.below(100) {
                    0..=69 => {
                        let kind = self.random_kind();
                        let detached = self.rng.chance(5);
                        Op::Spawn(self.unit(kind, 1, detached))
                    }
                    70..=89 => Op::Join,
                    90..=94 => Op::Recv(self.feeder()),
                    95..=97 => Op::Yield,
                    _ => Op::Sleep(self.rng.below(500)),
                };
                self.account(&op, &mut expected, &mut unjoined);
                ops.push(op);
            }
        } else {
            let n = self.rng.below(9);
            for _ in 0..n {
                let spawn_chance = 35u64.saturating_sub(6 * depth as u64);
                let roll = self.rng.below(100);
                let op = if roll < spawn_chance && depth < MAX_DEPTH && self.budget > 0 {
                    let kind = self.random_kind();
                    let detached = self.rng.chance(5);
                    Op::Spawn(self.unit(kind, depth + 1, detached))
                } else {
                    match self.rng.below(100) {
                        0..=24 => Op::Yield,
                        25..=39 => Op::Sleep(self.rng.below(1500)),
                        40..=79 if self.budget > 0 => Op::Recv(self.feeder()),
                        40..=79 => Op::Yield,
                        _ => Op::Join,
                    }
                };
                self.account(&op, &mut expected, &mut unjoined);
                ops.push(op);
            }
        }
        // Whatever it did not join explicitly it joins at the end.
        for child in unjoined {
            expected = expected.wrapping_add(child.contribution());
            self.totals.joined_panics += (child.ending != Ending::Return) as usize;
        }
        let ending = if depth == 0 {
            Ending::Return
        } else {
            match self.rng.below(100) {
                0..=4 => Ending::PanicString,
                5..=7 => Ending::PanicStruct,
                _ => Ending::Return,
            }
        };
        if detached {
            self.totals.detached += 1;
            if ending == Ending::Return {
                self.totals.detached_sum = self.totals.detached_sum.wrapping_add(expected);
            }
        }
        self.totals.ops += ops.len();
        Arc::new(Plan {
            id,
            kind,
            base,
            ops,
            ending,
            detached,
            expected,
        })
    }

    fn account(&mut self, op: &Op, expected: &mut u64, unjoined: &mut VecDeque<Arc<Plan>>) {
        match op {
            Op::Spawn(child) if !child.detached => unjoined.push_back(child.clone()),
            Op::Recv(feeder) => {
                for value in &feeder.values {
                    *expected = expected.wrapping_add(*value);
                }
            }
            Op::Join => {
                if let Some(child) = unjoined.pop_front() {
                    *expected = expected.wrapping_add(child.contribution());
                    self.totals.joined_panics += (child.ending != Ending::Return) as usize;
                }
            }
            _ => {}
        }
    }

    fn feeder(&mut self) -> Arc<Feeder> {
        let kind = match self.rng.below(3) {
            0 => Kind::Green,
            1 => Kind::Task,
            _ => Kind::Foreign,
        };
        let id = self.new_id(kind);
        let chan = match self.rng.below(3) {
            0 => Chan::Oneshot,
            1 => Chan::Bounded(self.rng.below(3) as usize),
            _ => Chan::Unbounded,
        };
        let count = match chan {
            Chan::Oneshot => 1,
            _ => 1 + self.rng.below(6),
        };
        Arc::new(Feeder {
            id,
            kind,
            chan,
            values: (0..count).map(|_| self.rng.below(1 << 16)).collect(),
            delay: self.rng.below(3) as u8,
            sleep_us: self.rng.below(800),
            yield_between: self.rng.chance(30),
        })
    }
}

// ---------------------------------------------------------------------------------
// Running a plan.
// ---------------------------------------------------------------------------------

/// What one unit is doing, for the watchdog's dump.
struct Pending {
    kind: Kind,
    step: usize,
    what: &'static str,
    since: Instant,
}

type Job = Box<dyn FnOnce() + Send>;

/// What the units of one run share.
struct Ctx {
    seed: u64,
    workers: usize,
    progress: AtomicU64,
    finished: [AtomicUsize; 3],
    joined_panics: AtomicUsize,
    detached_sum: AtomicU64,
    pending: Mutex<BTreeMap<u32, Pending>>,
    failures: Mutex<Vec<String>>,
    foreign: Mutex<Vec<std::sync::mpsc::Sender<Job>>>,
}

impl Ctx {
    fn at(&self, id: u32, kind: Kind, step: usize, what: &'static str) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap();
        pending.insert(
            id,
            Pending {
                kind,
                step,
                what,
                since: Instant::now(),
            },
        );
    }

    fn done(&self, id: u32, kind: Kind) {
        self.pending.lock().unwrap().remove(&id);
        self.finished[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, message: String) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        self.failures.lock().unwrap().push(message);
    }

    fn finished_total(&self) -> usize {
        self.finished
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Checks a joined child's outcome against its plan; returns its contribution.
    fn check_join(&self, child: &Plan, outcome: std::thread::Result<u64>) -> u64 {
        match (outcome, child.ending) {
            (Ok(value), Ending::Return) => {
                if value != child.expected {
                    self.fail(format!(
                        "unit {} ({}) returned {value}, planned {}",
                        child.id,
                        child.kind.name(),
                        child.expected
                    ));
                }
                value
            }
            (Err(payload), Ending::PanicString) => {
                let want = format!("{PANIC_PREFIX}{}", child.id);
                if payload.downcast_ref::<String>() != Some(&want) {
                    self.fail(format!(
                        "unit {} ({}) panicked with {}, planned {want:?}",
                        child.id,
                        child.kind.name(),
                        describe(&*payload)
                    ));
                }
                self.joined_panics.fetch_add(1, Ordering::Relaxed);
                0
            }
            (Err(payload), Ending::PanicStruct) => {
                if payload.downcast_ref::<StressPanic>() != Some(&StressPanic(child.id)) {
                    self.fail(format!(
                        "unit {} ({}) panicked with {}, planned StressPanic({})",
                        child.id,
                        child.kind.name(),
                        describe(&*payload),
                        child.id
                    ));
                }
                self.joined_panics.fetch_add(1, Ordering::Relaxed);
                0
            }
            (outcome, ending) => {
                self.fail(format!(
                    "unit {} ({}) ended with {}, planned {ending:?}",
                    child.id,
                    child.kind.name(),
                    match outcome {
                        Ok(value) => format!("Ok({value})"),
                        Err(payload) => format!("a panic: {}", describe(&*payload)),
                    }
                ));
                0
            }
        }
    }

    /// The end of a unit: checks its own sum, counts it finished, then returns or
    /// panics as planned.
    fn finish(&self, plan: &Plan, sum: u64) -> u64 {
        if sum != plan.expected {
            self.fail(format!(
                "unit {} ({}) summed {sum}, planned {}",
                plan.id,
                plan.kind.name(),
                plan.expected
            ));
        }
        if plan.detached && plan.ending == Ending::Return {
            self.detached_sum.fetch_add(sum, Ordering::Relaxed);
        }
        self.done(plan.id, plan.kind);
        match plan.ending {
            Ending::Return => sum,
            Ending::PanicString => std::panic::panic_any(format!("{PANIC_PREFIX}{}", plan.id)),
            Ending::PanicStruct => std::panic::panic_any(StressPanic(plan.id)),
        }
    }

    fn dump(&self, stalled: Duration, totals: &Totals) -> String {
        let mut out = format!(
            "stress: no progress for {stalled:?}: seed {:#x} on {} workers (reproduce with \
             GREENRT_STRESS_SEED={:#x} cargo test --test stress).\nfinished: {} of {} green \
             threads, {} of {} tasks, {} of {} foreign feeders\n",
            self.seed,
            self.workers,
            self.seed,
            self.finished[0].load(Ordering::Relaxed),
            totals.units[0],
            self.finished[1].load(Ordering::Relaxed),
            totals.units[1],
            self.finished[2].load(Ordering::Relaxed),
            totals.units[2],
        );
        let pending = self.pending.lock().unwrap();
        let mut waiting: Vec<_> = pending.iter().collect();
        waiting.sort_by_key(|(_, p)| p.since);
        let _ = writeln!(out, "{} units still pending, longest first:", waiting.len());
        for (id, p) in waiting.iter().take(60) {
            let _ = writeln!(
                out,
                "  unit {id:>5} {:<21} step {:>3}: {:<44} for {:.1?}",
                p.kind.name(),
                p.step,
                p.what,
                p.since.elapsed()
            );
        }
        if waiting.len() > 60 {
            let _ = writeln!(out, "  ... and {} more", waiting.len() - 60);
        }
        for failure in self.failures.lock().unwrap().iter().take(20) {
            let _ = writeln!(out, "failure so far: {failure}");
        }
        out
    }

    fn foreign_job(&self, feeder_id: u32, job: Job) {
        let foreign = self.foreign.lock().unwrap();
        let thread = &foreign[feeder_id as usize % foreign.len()];
        thread.send(job).expect("foreign feeder thread gone");
    }
}

fn describe(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        format!("{s:?}")
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        format!("{s:?}")
    } else if let Some(p) = payload.downcast_ref::<StressPanic>() {
        format!("{p:?}")
    } else if payload.is::<greenrt::Cancelled>() {
        "greenrt::Cancelled".to_string()
    } else {
        "a payload of another type".to_string()
    }
}

/// The planned panics would print thousands of messages: silence those, keep the rest.
fn quiet_planned_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let planned = payload.is::<StressPanic>()
                || payload
                    .downcast_ref::<String>()
                    .is_some_and(|s| s.starts_with(PANIC_PREFIX));
            if !planned {
                previous(info);
            }
        }));
    });
}

// Channels, either end, whatever their kind.

enum Tx {
    Oneshot(Option<oneshot::Sender<u64>>),
    Bounded(mpsc::Sender<u64>),
    Unbounded(mpsc::UnboundedSender<u64>),
}

enum Rx {
    Oneshot(Option<oneshot::Receiver<u64>>),
    Bounded(mpsc::Receiver<u64>),
    Unbounded(mpsc::UnboundedReceiver<u64>),
}

fn channel(chan: Chan) -> (Tx, Rx) {
    match chan {
        Chan::Oneshot => {
            let (tx, rx) = oneshot::channel();
            (Tx::Oneshot(Some(tx)), Rx::Oneshot(Some(rx)))
        }
        Chan::Bounded(buffer) => {
            let (tx, rx) = mpsc::channel(buffer);
            (Tx::Bounded(tx), Rx::Bounded(rx))
        }
        Chan::Unbounded => {
            let (tx, rx) = mpsc::unbounded();
            (Tx::Unbounded(tx), Rx::Unbounded(rx))
        }
    }
}

impl Tx {
    async fn send(&mut self, value: u64) -> bool {
        match self {
            Tx::Oneshot(tx) => tx.take().is_some_and(|tx| tx.send(value).is_ok()),
            Tx::Bounded(tx) => tx.send(value).await.is_ok(),
            Tx::Unbounded(tx) => tx.unbounded_send(value).is_ok(),
        }
    }
}

impl Rx {
    async fn next(&mut self) -> Option<u64> {
        match self {
            Rx::Oneshot(rx) => match rx.take() {
                Some(rx) => rx.await.ok(),
                None => None,
            },
            Rx::Bounded(rx) => rx.next().await,
            Rx::Unbounded(rx) => rx.next().await,
        }
    }
}

/// A future task's yield: wake ourselves, return Pending once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn spawn_unit(ctx: &Arc<Ctx>, plan: &Arc<Plan>) -> Option<JoinHandle<u64>> {
    let (ctx, plan) = (ctx.clone(), plan.clone());
    let detached = plan.detached;
    let handle = match plan.kind {
        Kind::Green => greenrt::spawn(move || run_green(&ctx, &plan)),
        Kind::Task => greenrt::spawn_async(run_task(ctx, plan)),
        Kind::Foreign => unreachable!("units are green threads or tasks"),
    };
    (!detached).then_some(handle)
}

/// Starts the feeder of a `Recv` and returns the receiving end.
fn start_feeder(ctx: &Arc<Ctx>, feeder: &Arc<Feeder>) -> Rx {
    let (mut tx, rx) = channel(feeder.chan);
    let (ctx, feeder) = (ctx.clone(), feeder.clone());
    let (id, kind) = (feeder.id, feeder.kind);
    ctx.at(id, kind, 0, "feeder: queued");
    match kind {
        Kind::Green => drop(greenrt::spawn(move || {
            ctx.at(id, kind, 0, "feeder: delay");
            match feeder.delay {
                1 => greenrt::yield_now(),
                2 => greenrt::sleep(Duration::from_micros(feeder.sleep_us)),
                _ => {}
            }
            for (i, value) in feeder.values.iter().enumerate() {
                ctx.at(id, kind, i + 1, "feeder: send");
                if !greenrt::block_on(tx.send(*value)) {
                    ctx.fail(format!("feeder {id}: the receiver is gone"));
                }
                if feeder.yield_between {
                    greenrt::yield_now();
                }
            }
            drop(tx);
            ctx.done(id, kind);
        })),
        Kind::Task => drop(greenrt::spawn_async(async move {
            ctx.at(id, kind, 0, "feeder: delay");
            match feeder.delay {
                1 => YieldNow(false).await,
                2 => greenrt::time::sleep(Duration::from_micros(feeder.sleep_us)).await,
                _ => {}
            }
            for (i, value) in feeder.values.iter().enumerate() {
                ctx.at(id, kind, i + 1, "feeder: send");
                if !tx.send(*value).await {
                    ctx.fail(format!("feeder {id}: the receiver is gone"));
                }
                if feeder.yield_between {
                    YieldNow(false).await;
                }
            }
            drop(tx);
            ctx.done(id, kind);
        })),
        Kind::Foreign => {
            let ctx2 = ctx.clone();
            ctx2.foreign_job(
                id,
                Box::new(move || {
                    ctx.at(id, kind, 0, "feeder: delay");
                    match feeder.delay {
                        1 => std::thread::yield_now(),
                        2 => std::thread::sleep(Duration::from_micros(feeder.sleep_us)),
                        _ => {}
                    }
                    for (i, value) in feeder.values.iter().enumerate() {
                        ctx.at(id, kind, i + 1, "feeder: send");
                        if !futures::executor::block_on(tx.send(*value)) {
                            ctx.fail(format!("feeder {id}: the receiver is gone"));
                        }
                        if feeder.yield_between {
                            std::thread::yield_now();
                        }
                    }
                    drop(tx);
                    ctx.done(id, kind);
                }),
            );
        }
    }
    rx
}

fn check_received(ctx: &Ctx, plan: &Plan, feeder: &Feeder, i: usize, got: Option<u64>) -> u64 {
    let want = feeder.values.get(i).copied();
    if got != want {
        ctx.fail(format!(
            "unit {} received {got:?} as message {i} from feeder {}, planned {want:?}",
            plan.id, feeder.id
        ));
    }
    got.unwrap_or(0)
}

fn run_green(ctx: &Arc<Ctx>, plan: &Arc<Plan>) -> u64 {
    let mut sum = plan.base;
    let mut children: VecDeque<(JoinHandle<u64>, Arc<Plan>)> = VecDeque::new();
    for (step, op) in plan.ops.iter().enumerate() {
        ctx.at(plan.id, plan.kind, step, op.name());
        match op {
            Op::Spawn(child) => {
                if let Some(handle) = spawn_unit(ctx, child) {
                    children.push_back((handle, child.clone()));
                }
            }
            Op::Yield => greenrt::yield_now(),
            Op::Sleep(us) => greenrt::sleep(Duration::from_micros(*us)),
            Op::Recv(feeder) => {
                let mut rx = start_feeder(ctx, feeder);
                for i in 0..feeder.values.len() {
                    let got = greenrt::block_on(rx.next());
                    sum = sum.wrapping_add(check_received(ctx, plan, feeder, i, got));
                    if feeder.yield_between {
                        greenrt::yield_now();
                    }
                }
                // Once the feeder has sent everything and dropped its end: closed.
                let last = greenrt::block_on(rx.next());
                check_received(ctx, plan, feeder, feeder.values.len(), last);
            }
            Op::Join => {
                if let Some((handle, child)) = children.pop_front() {
                    sum = sum.wrapping_add(ctx.check_join(&child, handle.join()));
                }
            }
        }
    }
    let end = plan.ops.len();
    while let Some((handle, child)) = children.pop_front() {
        ctx.at(plan.id, plan.kind, end, "join at the end");
        sum = sum.wrapping_add(ctx.check_join(&child, handle.join()));
    }
    ctx.finish(plan, sum)
}

fn run_task(ctx: Arc<Ctx>, plan: Arc<Plan>) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        let mut sum = plan.base;
        let mut children: VecDeque<(JoinHandle<u64>, Arc<Plan>)> = VecDeque::new();
        for (step, op) in plan.ops.iter().enumerate() {
            ctx.at(plan.id, plan.kind, step, op.name());
            match op {
                Op::Spawn(child) => {
                    if let Some(handle) = spawn_unit(&ctx, child) {
                        children.push_back((handle, child.clone()));
                    }
                }
                Op::Yield => YieldNow(false).await,
                Op::Sleep(us) => greenrt::time::sleep(Duration::from_micros(*us)).await,
                Op::Recv(feeder) => {
                    let mut rx = start_feeder(&ctx, feeder);
                    for i in 0..feeder.values.len() {
                        let got = rx.next().await;
                        sum = sum.wrapping_add(check_received(&ctx, &plan, feeder, i, got));
                        if feeder.yield_between {
                            YieldNow(false).await;
                        }
                    }
                    let last = rx.next().await;
                    check_received(&ctx, &plan, feeder, feeder.values.len(), last);
                }
                Op::Join => {
                    if let Some((handle, child)) = children.pop_front() {
                        sum = sum.wrapping_add(ctx.check_join(&child, handle.await));
                    }
                }
            }
        }
        let end = plan.ops.len();
        while let Some((handle, child)) = children.pop_front() {
            ctx.at(plan.id, plan.kind, end, "join at the end");
            sum = sum.wrapping_add(ctx.check_join(&child, handle.await));
        }
        ctx.finish(&plan, sum)
    })
}

/// What a run reports back to the watchdog.
struct Outcome {
    root_sum: u64,
    elapsed: Duration,
}

/// Runs one seed on `workers` workers, watched; panics (naming the seed) on any
/// deviation from the plan or when progress stops.
fn run_seed(seed: u64, workers: usize, units: usize) {
    quiet_planned_panics();
    let (root, totals) = Planner::root(seed, units);
    let ctx = Arc::new(Ctx {
        seed,
        workers,
        progress: AtomicU64::new(0),
        finished: Default::default(),
        joined_panics: AtomicUsize::new(0),
        detached_sum: AtomicU64::new(0),
        pending: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(Vec::new()),
        foreign: Mutex::new(Vec::new()),
    });
    let reproduce = format!(
        "seed {seed:#x} on {workers} workers (reproduce with GREENRT_STRESS_SEED={seed:#x} \
         cargo test --test stress)"
    );
    let all_units: usize = totals.units.iter().sum();
    let (report, outcome) = std::sync::mpsc::channel();
    let driver = {
        let (ctx, root) = (ctx.clone(), root.clone());
        std::thread::Builder::new()
            .name(format!("stress-{seed:#x}-{workers}w"))
            .spawn(move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| drive(&ctx, &root, all_units)));
                let _ = report.send(outcome);
            })
            .unwrap()
    };

    // The watchdog: this thread.
    let stall_limit = Duration::from_secs(env_number("GREENRT_STRESS_STALL_SECS", 20));
    let mut seen = (ctx.progress.load(Ordering::Relaxed), Instant::now());
    let outcome = loop {
        match outcome.recv_timeout(Duration::from_millis(200)) {
            Ok(outcome) => break outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let progress = ctx.progress.load(Ordering::Relaxed);
                if progress != seen.0 {
                    seen = (progress, Instant::now());
                } else if seen.1.elapsed() >= stall_limit {
                    // The driver and its runtime stay stuck; the test fails now.
                    panic!("{}", ctx.dump(seen.1.elapsed(), &totals));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("stress: the driver thread died without a report: {reproduce}")
            }
        }
    };
    driver.join().unwrap();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(payload) => panic!(
            "stress: the run panicked: {}: {reproduce}",
            describe(&*payload)
        ),
    };

    let failures = ctx.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "stress: {} deviations from the plan, {reproduce}:\n  {}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert_eq!(
        outcome.root_sum, root.expected,
        "stress: the root's sum, {reproduce}"
    );
    for kind in [Kind::Green, Kind::Task, Kind::Foreign] {
        assert_eq!(
            ctx.finished[kind.index()].load(Ordering::Relaxed),
            totals.units[kind.index()],
            "stress: finished {}s, {reproduce}",
            kind.name()
        );
    }
    assert_eq!(
        ctx.joined_panics.load(Ordering::Relaxed),
        totals.joined_panics,
        "stress: panics that came back through join, {reproduce}"
    );
    assert_eq!(
        ctx.detached_sum.load(Ordering::Relaxed),
        totals.detached_sum,
        "stress: the sum of the detached units' results, {reproduce}"
    );
    assert!(ctx.pending.lock().unwrap().is_empty());
    if std::env::var_os("GREENRT_STRESS_VERBOSE").is_some() {
        eprintln!(
            "stress: seed {seed:#x} on {workers} workers: {} green threads, {} tasks, {} \
             foreign feeds, {} ops, {} panics joined, {} detached, in {:.1?}",
            totals.units[0],
            totals.units[1],
            totals.units[2],
            totals.ops,
            totals.joined_panics,
            totals.detached,
            outcome.elapsed
        );
    }
}

/// The driver thread: a runtime, the foreign feeder threads, the root unit as the
/// runtime's host green thread; waits for the detached units before shutting down.
fn drive(ctx: &Arc<Ctx>, root: &Arc<Plan>, all_units: usize) -> Outcome {
    let start = Instant::now();
    let rt = Builder::new()
        .worker_threads(ctx.workers)
        .thread_name(format!("stress-worker-{:#x}", ctx.seed))
        .build()
        .unwrap();
    let mut foreign_threads = Vec::new();
    for i in 0..FOREIGN_THREADS {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        ctx.foreign.lock().unwrap().push(tx);
        foreign_threads.push(
            std::thread::Builder::new()
                .name(format!("stress-foreign-{i}"))
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .unwrap(),
        );
    }
    let root_sum = rt.run(|| {
        let sum = run_green(ctx, root);
        // Detached units may still run: the runtime's drop would cancel them.
        while ctx.finished_total() < all_units {
            greenrt::sleep(Duration::from_millis(1));
        }
        sum
    });
    drop(rt);
    ctx.foreign.lock().unwrap().clear();
    for thread in foreign_threads {
        thread.join().unwrap();
    }
    Outcome {
        root_sum,
        elapsed: start.elapsed(),
    }
}
