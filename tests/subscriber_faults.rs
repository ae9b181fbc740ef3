//! A tracing subscriber that panics inside greenrt's scheduler: the panic must never
//! strand a green thread silently. A panic in a callback the scheduler makes on a worker
//! (at a switch) aborts the process, saying why; a panic in a wake's scheduler event
//! reaches the waking code only after the green thread was queued, so it still runs.
//! Each case runs in a child process (`common::in_child`), since the failures being
//! tested are an abort or a hang.
#![cfg(feature = "tracing")]

mod common;
use common::{child_finished, child_signalled, describe_child, in_child, runtime};
use std::time::Duration;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A layer that panics in one callback: entering a `green` span, or a `wake` scheduler
/// event recorded on the thread named `waker`.
struct PanicIn(&'static str);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PanicIn {
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if self.0 == "enter" && ctx.span(id).is_some_and(|span| span.name() == "green") {
            panic!("this subscriber panics when a green span is entered");
        }
    }
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        struct IsWake(bool);
        impl tracing::field::Visit for IsWake {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0 |= field.name() == "event" && value == "wake";
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut is_wake = IsWake(false);
        event.record(&mut is_wake);
        if self.0 == "wake" && is_wake.0 && std::thread::current().name() == Some("waker") {
            panic!("this subscriber panics on a wake event");
        }
    }
}

/// In a child: a one-worker runtime, with a global subscriber that panics in `what`.
fn runtime_with_subscriber_panicking_in(what: &'static str) -> greenrt::runtime::Runtime {
    let subscriber = tracing_subscriber::registry().with(PanicIn(what));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    runtime(1)
}

#[test]
fn a_subscriber_panicking_at_a_switch_on_a_worker_aborts_naming_the_cause() {
    let output = in_child(
        "a_subscriber_panicking_at_a_switch_on_a_worker_aborts_naming_the_cause",
        "enter",
        || {
            let rt = runtime_with_subscriber_panicking_in("enter");
            let _ = rt.spawn(|| 5).join();
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("this subscriber panics when a green span is entered")
            && stderr.contains("a tracing subscriber panicked while greenrt switched"),
        "the abort must say where the panic came from: {stderr}"
    );
}

#[test]
fn a_subscriber_panicking_on_a_wake_event_still_leaves_the_green_thread_queued() {
    let output = in_child(
        "a_subscriber_panicking_on_a_wake_event_still_leaves_the_green_thread_queued",
        "wake",
        || {
            let rt = runtime_with_subscriber_panicking_in("wake");
            // The wake must find the green thread parked for its event to be sent (a
            // wake while it runs only marks it). It signals just before it parks, so
            // try until one wake did panic; every green thread must still finish.
            let mut panicked_wakes = 0;
            for _ in 0..50 {
                let (tx, rx) = futures::channel::oneshot::channel::<u32>();
                let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
                let green = rt.spawn(move || {
                    waiting_tx.send(()).unwrap();
                    greenrt::block_on(rx).unwrap() + 1
                });
                waiting_rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(10));
                let sent = std::thread::Builder::new()
                    .name("waker".into())
                    .spawn(move || tx.send(41))
                    .unwrap()
                    .join();
                panicked_wakes += usize::from(sent.is_err());
                assert_eq!(green.join().unwrap(), 42, "the woken green thread ran");
                if panicked_wakes > 0 {
                    break;
                }
            }
            assert!(panicked_wakes > 0, "no wake found the green thread parked");
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}

/// A layer that ships span records through a greenrt-aware sink: from a green
/// thread, handing a record over may suspend the green thread (modelled by a yield;
/// `greenrt::block_on(tx.send(..))` on a full channel does the same).
struct YieldOnNewSpan;

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for YieldOnNewSpan {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "green" {
            greenrt::yield_now();
        }
    }
}

/// A green thread's span is created at its first slice, on the resumer's stack: its
/// subscriber callbacks run there, where no green thread is current. One that suspends
/// "the current green thread" must not switch out of the worker's own stack (it did,
/// through a saved stack pointer that was never set: a crash).
#[test]
fn a_subscriber_that_yields_in_on_new_span_does_not_crash() {
    use tracing_subscriber::layer::SubscriberExt;
    let output = in_child(
        "a_subscriber_that_yields_in_on_new_span_does_not_crash",
        "on_new_span",
        || {
            let subscriber = tracing_subscriber::registry().with(YieldOnNewSpan);
            tracing::subscriber::set_global_default(subscriber).unwrap();
            let rt = runtime(1);
            // From a plain thread: the span is created on the worker.
            assert_eq!(rt.spawn(|| 5).join().unwrap(), 5);
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}
