//! Rayon thread pools, one per requested number of threads, kept for reuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The pool of `n_threads` threads (0: one per core), built on first use.
fn pool(n_threads: usize) -> Result<Arc<ThreadPool>, String> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pool) = pools.get(&n_threads) {
        return Ok(Arc::clone(pool));
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(|i| format!("geneverse-{i}"))
        .build()
        .map_err(|error| format!("could not start {n_threads} threads: {error}"))?;
    let pool = Arc::new(pool);
    pools.insert(n_threads, Arc::clone(&pool));
    Ok(pool)
}

/// Runs `work` on the pool of `n_threads` threads (0: one per core).
pub fn install<R: Send>(n_threads: usize, work: impl FnOnce() -> R + Send) -> Result<R, String> {
    Ok(pool(n_threads)?.install(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_have_the_requested_threads_and_are_reused() {
        assert_eq!(install(3, rayon::current_num_threads), Ok(3));
        assert!(Arc::ptr_eq(&pool(3).unwrap(), &pool(3).unwrap()));
        assert!(install(0, rayon::current_num_threads).unwrap() >= 1);
    }
}
