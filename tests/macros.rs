//! `#[greenrt::test]` and `#[greenrt::main]` against the real runtime.

use std::time::Duration;

#[greenrt::test(worker_threads = 2)]
fn test_body_runs_as_a_green_thread() {
    assert!(
        greenrt::current().is_some(),
        "the body must be a green thread"
    );
    let handle = greenrt::spawn(|| {
        greenrt::sleep(Duration::from_millis(1));
        std::thread::current().name().map(str::to_owned)
    });
    let worker = handle.join().unwrap().unwrap();
    assert!(worker.starts_with("greenrt-worker"), "{worker}");
}

#[greenrt::test(worker_threads = 3)]
fn worker_threads_setting_reaches_the_runtime() {
    let handle = greenrt::runtime::Handle::current();
    assert!(
        format!("{handle:?}").contains("worker_threads: 3"),
        "{handle:?}"
    );
}

#[greenrt::test]
async fn async_test_body_is_driven_by_block_on() {
    assert!(
        greenrt::current().is_none(),
        "an async body is not a green thread"
    );
    let green = greenrt::spawn(|| 20);
    let task = greenrt::spawn_async(async { 22 });
    greenrt::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(green.await.unwrap() + task.await.unwrap(), 42);
}

#[greenrt::test]
fn result_return_type_passes_through() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = greenrt::spawn(|| "7".parse::<u32>()).join().unwrap()?;
    assert_eq!(n, 7);
    Ok(())
}

#[greenrt::test]
#[should_panic(expected = "resumed on the caller")]
fn panic_in_body_reaches_the_test_harness() {
    panic!("resumed on the caller");
}

#[greenrt::main(worker_threads = 1, stack_size = 65536)]
fn entry_with_settings() -> usize {
    greenrt::spawn(|| 5).join().unwrap()
}

#[test]
fn main_attribute_works_on_a_helper_fn() {
    assert_eq!(entry_with_settings(), 5);
}

// What a plain `fn`/`async fn` allows must still compile and behave the same after the
// macros: tails coerced to the declared type, `impl Trait` returns, and parameters that
// belong to the future (dropped inside the runtime, even when the body never uses them).

#[greenrt::main(worker_threads = 1)]
async fn boxed_closure() -> Box<dyn Fn() -> u32 + Send> {
    Box::new(|| 1)
}

#[greenrt::main(worker_threads = 1)]
async fn dyn_ref() -> &'static dyn std::fmt::Debug {
    &5u8
}

#[greenrt::test(worker_threads = 1)]
async fn async_body_tail_is_coerced_to_the_declared_type() -> Result<(), Box<dyn std::error::Error>>
{
    greenrt::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}

#[test]
fn async_fns_whose_tails_need_coercing_work() {
    assert_eq!(boxed_closure()(), 1);
    assert_eq!(format!("{:?}", dyn_ref()), "5");
}

#[greenrt::main(worker_threads = 1)]
fn numbers() -> impl Iterator<Item = u32> {
    vec![1, 2, 3].into_iter()
}

#[test]
fn a_sync_fn_returning_impl_trait_works() {
    assert_eq!(numbers().sum::<u32>(), 6);
}

static IN_RUNTIME_AT_DROP: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Records whether it was dropped inside a runtime.
struct DropProbe;

impl Drop for DropProbe {
    fn drop(&mut self) {
        IN_RUNTIME_AT_DROP.store(
            greenrt::runtime::Handle::try_current().is_some(),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

#[greenrt::main(worker_threads = 1)]
async fn holds_an_unused_parameter(_probe: DropProbe) {
    greenrt::time::sleep(Duration::from_millis(1)).await;
}

#[test]
fn unused_async_parameters_are_dropped_inside_the_runtime() {
    holds_an_unused_parameter(DropProbe);
    assert!(
        IN_RUNTIME_AT_DROP.load(std::sync::atomic::Ordering::SeqCst),
        "the parameter was dropped outside the runtime (after it shut down)"
    );
}

#[greenrt::main(worker_threads = 1)]
async fn async_numbers() -> impl Iterator<Item = u32> {
    greenrt::time::sleep(Duration::from_millis(1)).await;
    vec![4, 5].into_iter()
}

#[test]
fn an_async_fn_returning_impl_trait_works() {
    assert_eq!(async_numbers().sum::<u32>(), 9);
}
