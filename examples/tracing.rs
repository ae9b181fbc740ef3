//! Watch green threads switch: each slice of a green thread's execution is its
//! `green` span being entered and exited, and user spans stay with their green thread.
//!
//! ```text
//! cargo run --release --example tracing
//! ```

use tracing_subscriber::fmt::format::FmtSpan;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter("greenrt=trace,tracing=info,info")
        // Print a line each time a span is entered or exited: one per slice.
        .with_span_events(FmtSpan::ENTER | FmtSpan::EXIT)
        .with_thread_names(true)
        .init();

    let rt = greenrt::runtime::Builder::new()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.run(|| {
        let handles: Vec<_> = ["alpha", "beta"]
            .into_iter()
            .map(|name| {
                greenrt::Builder::new()
                    .name(name.to_string())
                    .spawn(move || {
                        let span = tracing::info_span!("job", name);
                        let _entered = span.enter();
                        for step in 0..2 {
                            tracing::info!(step, "working");
                            greenrt::yield_now(); // switch out: spans exit; back in: re-entered
                        }
                    })
                    .unwrap()
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
}
