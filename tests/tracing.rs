//! Tracing: a span per green thread, entered per slice, user spans kept per green
//! thread, scoped subscribers followed, scheduler events and warnings emitted.
#![cfg(feature = "tracing")]

mod common;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Default)]
struct SpanInfo {
    name: &'static str,
    target: String,
    level: Option<Level>,
    fields: String,
    parent: Option<Id>,
    enters: usize,
    exits: usize,
}

#[derive(Debug, Clone)]
struct EventInfo {
    target: String,
    level: Level,
    fields: String,
    /// Names of the spans in scope when the event was recorded, innermost first.
    scope: Vec<&'static str>,
}

/// Records every span and event it sees.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<HashMap<u64, SpanInfo>>>,
    events: Arc<Mutex<Vec<EventInfo>>>,
}

struct FieldText(String);
impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?};", field.name(), value));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = FieldText(String::new());
        attrs.record(&mut fields);
        let parent = if attrs.is_root() {
            None
        } else {
            attrs
                .parent()
                .cloned()
                .or_else(|| ctx.current_span().id().cloned())
        };
        self.spans.lock().unwrap().insert(
            id.into_u64(),
            SpanInfo {
                name: attrs.metadata().name(),
                target: attrs.metadata().target().to_string(),
                level: Some(*attrs.metadata().level()),
                fields: fields.0,
                parent,
                ..Default::default()
            },
        );
    }
    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            span.enters += 1;
        }
    }
    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            span.exits += 1;
        }
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = FieldText(String::new());
        event.record(&mut fields);
        let scope = ctx
            .event_scope(event)
            .map(|scope| scope.map(|span| span.name()).collect())
            .unwrap_or_default();
        self.events.lock().unwrap().push(EventInfo {
            target: event.metadata().target().to_string(),
            level: *event.metadata().level(),
            fields: fields.0,
            scope,
        });
    }
}

fn recorder() -> (Recorder, tracing::subscriber::DefaultGuard) {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (recorder, guard)
}

fn runtime(workers: usize) -> greenrt::runtime::Runtime {
    greenrt::runtime::Builder::new()
        .worker_threads(workers)
        .build()
        .unwrap()
}

#[test]
fn each_green_thread_has_a_debug_span_child_of_the_spawners_span() {
    let (recorder, _guard) = recorder();
    let rt = runtime(2);
    let (id, outer_id) = rt.run(|| {
        let outer = tracing::info_span!("request");
        let _entered = outer.enter();
        let handle = greenrt::Builder::new()
            .name("child".into())
            .spawn(|| ())
            .unwrap();
        let id = handle.green().id().as_u64();
        handle.join().unwrap();
        (id, outer.id().unwrap())
    });
    let spans = recorder.spans.lock().unwrap();
    let green = spans
        .values()
        .find(|s| s.name == "green" && s.fields.contains(&format!("id={id};")))
        .expect("a span for the spawned green thread");
    assert_eq!(green.target, "greenrt::green");
    assert_eq!(green.level, Some(Level::DEBUG));
    assert!(green.fields.contains("name=\"child\""), "{}", green.fields);
    assert_eq!(
        green.parent.as_ref(),
        Some(&outer_id),
        "parent must be the spawner's current span"
    );
}

#[test]
fn green_span_is_entered_and_exited_once_per_slice() {
    let (recorder, _guard) = recorder();
    let rt = runtime(1);
    const YIELDS: usize = 25;
    let id = rt.run(|| {
        let handle = greenrt::spawn(|| {
            for _ in 0..YIELDS {
                greenrt::yield_now();
            }
        });
        let id = handle.green().id().as_u64();
        handle.join().unwrap();
        id
    });
    let spans = recorder.spans.lock().unwrap();
    let green = spans
        .values()
        .find(|s| s.name == "green" && s.fields.contains(&format!("id={id};")))
        .unwrap();
    // One slice before the first yield, one after each yield.
    assert_eq!(green.enters, YIELDS + 1, "{green:?}");
    assert_eq!(green.exits, YIELDS + 1, "{green:?}");
}

#[test]
fn user_spans_stay_with_their_green_thread_across_switches() {
    let (recorder, _guard) = recorder();
    let rt = runtime(1);
    rt.run(|| {
        let handles: Vec<_> = ["alpha", "beta", "gamma"]
            .into_iter()
            .map(|name| {
                greenrt::spawn(move || {
                    let span = match name {
                        "alpha" => tracing::info_span!("alpha"),
                        "beta" => tracing::info_span!("beta"),
                        _ => tracing::info_span!("gamma"),
                    };
                    let _entered = span.enter();
                    for round in 0..50 {
                        greenrt::yield_now();
                        // The span current in this green thread is still its own.
                        let current = tracing::Span::current();
                        assert_eq!(
                            current.metadata().map(|m| m.name()),
                            Some(name),
                            "round {round}"
                        );
                        tracing::info!(owner = name, round, "tick");
                    }
                })
            })
            .collect();
        // A green thread that enters no span never sees another's.
        let bystander = greenrt::spawn(|| {
            for _ in 0..50 {
                greenrt::yield_now();
                let current = tracing::Span::current();
                assert_eq!(current.metadata().map(|m| m.name()), Some("green"));
                tracing::info!(owner = "bystander", "tick");
            }
        });
        for h in handles {
            h.join().unwrap();
        }
        bystander.join().unwrap();
    });
    let events = recorder.events.lock().unwrap();
    let ticks: Vec<_> = events
        .iter()
        .filter(|e| e.fields.contains("tick"))
        .collect();
    assert_eq!(ticks.len(), 4 * 50);
    for event in ticks {
        let owner = event
            .fields
            .split("owner=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        // Innermost first; beyond these come the spawner's spans (the host green
        // thread of `run`), which are this green thread's parents, not leaks.
        match owner {
            "bystander" => assert_eq!(event.scope[0], "green", "{event:?}"),
            owner => assert_eq!(event.scope[..2], [owner, "green"], "{event:?}"),
        }
        assert!(
            !event
                .scope
                .iter()
                .any(|s| ["alpha", "beta", "gamma"].contains(s) && *s != owner),
            "{event:?}"
        );
    }
}

#[test]
fn scoped_subscriber_sees_events_of_green_threads_on_workers() {
    let (recorder, _guard) = recorder();
    let rt = runtime(2);
    rt.run(|| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                greenrt::spawn(move || {
                    greenrt::yield_now();
                    tracing::info!(i, "from green");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let events = recorder.events.lock().unwrap();
    let count = events
        .iter()
        .filter(|e| e.fields.contains("from green"))
        .count();
    assert_eq!(
        count, 8,
        "every green thread's event reaches the scoped subscriber"
    );
    assert!(events
        .iter()
        .filter(|e| e.fields.contains("from green"))
        .all(|e| e.scope.first() == Some(&"green")));
}

#[test]
fn scheduler_events_are_trace_level_under_greenrt_sched() {
    let (recorder, _guard) = recorder();
    let rt = runtime(1);
    rt.run(|| greenrt::spawn(|| ()).join().unwrap());
    let events = recorder.events.lock().unwrap();
    let spawn = events
        .iter()
        .find(|e| e.target == "greenrt::sched" && e.fields.contains("event=\"spawn\""))
        .expect("a spawn event");
    assert_eq!(spawn.level, Level::TRACE);
    assert!(spawn.fields.contains("id="), "{spawn:?}");
}

/// Worker threads see only the global default, yet a scoped subscriber set where the
/// runtime was built gets the workers' park events too (spawn, steal and wake follow
/// the green thread's own dispatcher).
#[test]
fn a_scoped_subscriber_sees_the_workers_park_events() {
    // In a child process: tracing caches each callsite's interest process-wide, and a
    // callsite first hit while other tests' subscribers come and go can be left with a
    // stale "never" (a race inside tracing-core between registering a callsite and a
    // new dispatcher), which would hide the park event from this test.
    let output = common::in_child(
        "a_scoped_subscriber_sees_the_workers_park_events",
        "park",
        scoped_subscriber_sees_park_events,
    );
    assert!(
        common::child_finished(&output),
        "{}",
        common::describe_child(&output)
    );
}

fn scoped_subscriber_sees_park_events() {
    let (recorder, _guard) = recorder();
    let rt = runtime(2);
    rt.run(|| greenrt::spawn(|| ()).join().unwrap());
    // Both workers park once they run out of work (no timing: wait until they have).
    let parked = |events: &[EventInfo]| {
        events
            .iter()
            .filter(|e| e.target == "greenrt::sched" && e.fields.contains("event=\"park\""))
            .map(|e| e.fields.clone())
            .collect::<std::collections::HashSet<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while parked(&recorder.events.lock().unwrap()).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no park events from both workers"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let events = recorder.events.lock().unwrap();
    let park = events
        .iter()
        .find(|e| e.fields.contains("event=\"park\""))
        .unwrap();
    assert_eq!(park.level, Level::TRACE);
    assert!(park.fields.contains("worker="), "{park:?}");
}

#[test]
fn blocking_while_unwinding_warns_naming_the_green_thread() {
    let (recorder, _guard) = recorder();
    let rt = runtime(1);
    struct SleepsOnDrop;
    impl Drop for SleepsOnDrop {
        fn drop(&mut self) {
            greenrt::sleep(std::time::Duration::from_millis(1));
        }
    }
    let id = rt.run(|| {
        let handle = greenrt::Builder::new()
            .name("unwinder".into())
            .spawn(|| {
                let _guard = SleepsOnDrop;
                panic!("expected panic");
            })
            .unwrap();
        let id = handle.green().id();
        assert!(handle.join().is_err());
        id
    });
    let events = recorder.events.lock().unwrap();
    let warning = events
        .iter()
        .find(|e| e.level == Level::WARN && e.target == "greenrt::green")
        .expect("a warning about blocking while unwinding");
    assert!(warning.fields.contains(&format!("id={id}")), "{warning:?}");
    assert!(warning.fields.contains("unwinder"), "{warning:?}");
}

#[test]
fn user_spans_stay_per_green_thread_when_greenrt_spans_are_filtered_out() {
    let recorder = Recorder::default();
    // INFO: greenrt's DEBUG spans are disabled, user INFO spans are kept.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = runtime(1);
    rt.run(|| {
        let outer = tracing::info_span!("outer");
        let _outer = outer.enter();
        let handles: Vec<_> = ["alpha", "beta"]
            .into_iter()
            .map(|name| {
                greenrt::spawn(move || {
                    let span = if name == "alpha" {
                        tracing::info_span!("alpha")
                    } else {
                        tracing::info_span!("beta")
                    };
                    let _entered = span.enter();
                    for _ in 0..30 {
                        greenrt::yield_now();
                        tracing::info!(owner = name, "tick");
                    }
                })
            })
            .collect();
        for h in handles {
            // The host green thread blocks here: its own span stack must survive too.
            h.join().unwrap();
            assert_eq!(
                tracing::Span::current().metadata().map(|m| m.name()),
                Some("outer")
            );
        }
    });
    assert!(recorder
        .spans
        .lock()
        .unwrap()
        .values()
        .all(|s| s.name != "green"));
    let events = recorder.events.lock().unwrap();
    let ticks: Vec<_> = events
        .iter()
        .filter(|e| e.fields.contains("tick"))
        .collect();
    assert_eq!(ticks.len(), 60);
    for event in ticks {
        let owner = event
            .fields
            .split("owner=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(event.scope[0], owner, "{event:?}");
        assert!(
            !event
                .scope
                .iter()
                .any(|s| (*s == "alpha" || *s == "beta") && *s != owner),
            "{event:?}"
        );
    }
}

#[test]
fn interleaved_green_threads_from_two_scoped_subscribers_reach_only_their_own() {
    let rt = runtime(1);
    let handle = rt.handle().clone();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let spawn_under = |label: &'static str| {
        let handle = handle.clone();
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let (recorder, _guard) = recorder();
            // Both spawners' green threads are queued before either finishes, so they
            // interleave on the single worker.
            barrier.wait();
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    handle.spawn(move || {
                        for round in 0..20 {
                            tracing::info!(label, i, round, "tick");
                            greenrt::yield_now();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let events = recorder.events.lock().unwrap();
            let ticks: Vec<_> = events
                .iter()
                .filter(|e| e.fields.contains("tick"))
                .collect();
            assert_eq!(
                ticks.len(),
                4 * 20,
                "{label}: every tick of its own green threads"
            );
            assert!(
                ticks
                    .iter()
                    .all(|e| e.fields.contains(&format!("label=\"{label}\""))),
                "{label} got another's events"
            );
        })
    };
    let a = spawn_under("a");
    let b = spawn_under("b");
    a.join().unwrap();
    b.join().unwrap();
}

/// Logs, in order, the creation of green spans (with the creating thread's name) and the
/// closing of spans named "request".
#[derive(Clone, Default)]
struct CreationLog(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CreationLog {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "green" {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            self.0
                .lock()
                .unwrap()
                .push(format!("new green on {thread}"));
        }
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if ctx.span(&id).is_some_and(|span| span.name() == "request") {
            self.0.lock().unwrap().push("close request".to_string());
        }
    }
}

#[test]
fn green_span_is_created_on_the_worker_that_runs_it_and_keeps_its_parent_open() {
    let log = CreationLog::default();
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry()
        .with(log.clone())
        .with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(2)
        .thread_name("span-worker")
        .build()
        .unwrap();
    // Spawned from a plain thread inside a span that is closed before anyone joins.
    let (handle, request_id) = {
        let request = tracing::info_span!("request");
        let _entered = request.enter();
        (rt.spawn(|| ()), request.id().unwrap())
    };
    let id = handle.green().id().as_u64();
    handle.join().unwrap();
    drop(rt);
    let log = log.0.lock().unwrap().clone();
    // Workers are named "span-worker-<index>".
    assert!(
        log.len() == 2
            && log[0].starts_with("new green on span-worker-")
            && log[1] == "close request",
        "the span is created by the worker that runs the green thread, and its parent \
         stays open until then: {log:?}"
    );
    let spans = recorder.spans.lock().unwrap();
    let green = spans
        .values()
        .find(|s| s.name == "green" && s.fields.contains(&format!("id={id};")))
        .expect("a span for the spawned green thread");
    assert_eq!(green.parent.as_ref(), Some(&request_id));
}

/// The runtime holds the scoped subscriber it sends park events to weakly: once the
/// user's scope ends, the subscriber is dropped and gets no more events.
#[test]
fn a_runtime_does_not_keep_a_scoped_subscriber_alive_after_its_scope() {
    // In a child process, for the reason given in the park test above.
    let output = common::in_child(
        "a_runtime_does_not_keep_a_scoped_subscriber_alive_after_its_scope",
        "weak",
        runtime_does_not_keep_a_scoped_subscriber_alive,
    );
    assert!(
        common::child_finished(&output),
        "{}",
        common::describe_child(&output)
    );
}

fn runtime_does_not_keep_a_scoped_subscriber_alive() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata};
    struct Sub {
        parks: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }
    impl Drop for Sub {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }
    impl tracing::Subscriber for Sub {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            if format!("{:?}", e).contains("park") {
                self.parks.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let parks = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = tracing::subscriber::set_default(Sub {
        parks: parks.clone(),
        dropped: dropped.clone(),
    });
    let rt = runtime(1);
    drop(guard); // the user's scope ends here
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = parks.load(Ordering::SeqCst);
    for _ in 0..5 {
        rt.run(|| greenrt::spawn(|| ()).join().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = parks.load(Ordering::SeqCst);
    assert!(
        dropped.load(Ordering::SeqCst) && after == before,
        "dropped={} parks before={before} after={after}",
        dropped.load(Ordering::SeqCst)
    );
}
