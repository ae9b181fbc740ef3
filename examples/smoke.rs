use std::time::{Duration, Instant};
fn main() {
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(2)
        .build()
        .unwrap();
    let t = Instant::now();
    let n = rt.run(|| {
        let hs: Vec<_> = (0..10_000u64)
            .map(|i| {
                greenrt::spawn(move || {
                    greenrt::sleep(Duration::from_millis(10));
                    greenrt::yield_now();
                    greenrt::block_on(async move { i * 2 })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    println!("sum {n} in {:?}", t.elapsed());
    let out = rt.block_on(async {
        greenrt::spawn(|| 20).await.unwrap() + greenrt::spawn_async(async { 22 }).await.unwrap()
    });
    println!("block_on {out}");
    let p = rt.run(|| greenrt::spawn(|| panic!("boom")).join());
    println!("panic joined: {:?}", p.unwrap_err().downcast_ref::<&str>());
    drop(rt);
    println!("dropped");
}
