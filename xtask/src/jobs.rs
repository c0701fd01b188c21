//! Independent boots side by side: at most N at once, the results in the
//! order of the input whatever order they finish in. Under TCG each guest
//! keeps about one host core busy, so the default is the number of cores.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The default `--jobs`: the host's cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` over `items` on at most `jobs` threads; results in input order.
pub fn in_parallel<T: Send, R: Send>(jobs: usize, items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let queue = Mutex::new(items.into_iter().enumerate().collect::<VecDeque<_>>());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some((i, item)) = next else { break };
                let r = f(item);
                done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn results_keep_the_input_order_and_jobs_overlap() {
        let start = Instant::now();
        let out = in_parallel(3, vec![30u64, 10, 20], |ms| {
            std::thread::sleep(Duration::from_millis(ms));
            ms * 2
        });
        assert_eq!(out, [60, 20, 40]);
        assert!(start.elapsed() < Duration::from_millis(55), "three jobs ran one after the other");
        assert_eq!(in_parallel(1, vec![1, 2, 3], |x| x + 1), [2, 3, 4]);
        assert!(in_parallel(0, Vec::<u8>::new(), |x| x).is_empty());
    }
}
