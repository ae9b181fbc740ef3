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
