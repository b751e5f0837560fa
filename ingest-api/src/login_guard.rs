//! Bounds on password checks (docs/security.md, password checks): at most a few argon2
//! computations at once, whatever the request rate, and a per-account backoff after failed
//! logins, whatever the addresses they come from.
//!
//! The computations run on the guard's own threads, one per slot. Each needs a 19 MiB work
//! area; glibc keeps what a thread freed in that thread's malloc arena, so hashing on tokio's
//! blocking pool left up to 16 arenas of about 58 MiB resident (`sluice dev` at about 800 MiB
//! after 100 sign-ups). On the guard's threads it stays in as many arenas as there are slots.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::problem::Problem;

/// Failed logins in a row an account is allowed before it must wait.
pub const FREE_FAILURES: u32 = 5;

/// The first wait after [`FREE_FAILURES`]; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(2);

/// The longest wait, and how long failures are remembered.
pub const MAX_WAIT: Duration = Duration::from_secs(900);

/// How long a password check waits for one of the argon2 slots before answering 503.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// Accounts remembered at most (the oldest quiet ones are forgotten first).
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// A computation for one of the guard's threads.
type Job = Box<dyn FnOnce() + Send>;

/// See the module docs.
pub struct LoginGuard {
    failures: Mutex<HashMap<String, Failures>>,
    slots: Semaphore,
    slot_count: usize,
    slot_wait: Duration,
    /// The queue of the guard's threads (they end when the guard is dropped).
    jobs: std::sync::mpsc::Sender<Job>,
}

impl LoginGuard {
    /// A guard running at most `concurrent` argon2 computations at once, a check waiting at
    /// most `slot_wait` ([`SLOT_WAIT`]) for its turn.
    pub fn new(concurrent: usize, slot_wait: Duration) -> LoginGuard {
        let slot_count = concurrent.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for i in 0..slot_count {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let job = queue.lock().expect("argon2 queue lock").recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // the guard is gone
                    }
                })
                .expect("cannot start an argon2 thread");
        }
        LoginGuard { failures: Mutex::default(), slots: Semaphore::new(slot_count), slot_count, slot_wait, jobs }
    }

    /// Runs `job` (an argon2 computation) on one of the guard's threads once a slot is free
    /// (503 `busy` after [`SLOT_WAIT`], as [`LoginGuard::slot`]).
    pub async fn compute<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Problem> {
        let _slot = self.slot().await?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .map_err(|_| Problem::internal("the password-check threads are gone".to_string()))?;
        result.await.map_err(|_| Problem::internal("a password check panicked".to_string()))
    }

    /// Refuses an account that is waiting after failed logins: 429 `too-many-failed-logins`
    /// with `Retry-After`. Attempts refused here are not failures: they do not extend the wait.
    pub fn check(&self, account: &str, now: Instant) -> Result<(), Problem> {
        let failures = self.failures.lock().expect("login guard lock");
        let Some(f) = failures.get(account) else { return Ok(()) };
        let until = f.last + wait_after(f.count);
        if now >= until {
            return Ok(());
        }
        let wait_s = until.duration_since(now).as_secs_f64().ceil().max(1.0) as u64;
        Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-failed-logins",
            "Too many failed logins",
            format!("{} failed logins in a row for this account; retry in {wait_s} s", f.count),
        )
        .retry_after(wait_s))
    }

    /// Records a failed password check of `account`.
    pub fn failed(&self, account: &str, now: Instant) {
        let mut failures = self.failures.lock().expect("login guard lock");
        if failures.len() >= CAPACITY && !failures.contains_key(account) {
            failures.retain(|_, f| now.duration_since(f.last) < MAX_WAIT);
        }
        let entry = failures.entry(account.to_string()).or_insert(Failures { count: 0, last: now });
        if now.duration_since(entry.last) >= MAX_WAIT {
            entry.count = 0; // an old streak is forgotten
        }
        entry.count += 1;
        entry.last = now;
    }

    /// A successful login ends the account's streak.
    pub fn succeeded(&self, account: &str) {
        self.failures.lock().expect("login guard lock").remove(account);
    }

    /// One of the argon2 slots, held while hashing or verifying; 503 `busy` when none frees up
    /// within a few seconds.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, Problem> {
        match tokio::time::timeout(self.slot_wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Too many password checks at once",
                format!("all {} password-check slots stayed busy for {} ms", self.slot_count, self.slot_wait.as_millis()),
            )
            .retry_after(1)),
        }
    }
}

/// How long an account waits after its `count`th failure in a row.
fn wait_after(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES).min(20);
    (FIRST_WAIT * 2u32.pow(doublings)).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_waits_longer_after_each_failure_beyond_the_free_ones() {
        let guard = LoginGuard::new(1, SLOT_WAIT);
        let start = Instant::now();
        for i in 0..FREE_FAILURES - 1 {
            guard.failed("a", start);
            assert!(guard.check("a", start).is_ok(), "failure {} is free", i + 1);
        }
        guard.failed("a", start);
        let refused = guard.check("a", start).unwrap_err();
        assert_eq!((refused.status, refused.retry_after_s), (429, Some(2)));
        assert!(guard.check("a", start + Duration::from_secs(2)).is_ok(), "the wait is over");
        guard.failed("a", start + Duration::from_secs(2));
        assert_eq!(guard.check("a", start + Duration::from_secs(2)).unwrap_err().retry_after_s, Some(4), "doubled");
        assert!(guard.check("b", start).is_ok(), "another account is not affected");
        for _ in 0..20 {
            guard.failed("a", start + Duration::from_secs(2));
        }
        assert_eq!(guard.check("a", start + Duration::from_secs(2)).unwrap_err().retry_after_s, Some(MAX_WAIT.as_secs()), "bounded");
        guard.succeeded("a");
        assert!(guard.check("a", start + Duration::from_secs(2)).is_ok(), "a success ends the streak");
    }

    #[test]
    fn an_old_streak_is_forgotten() {
        let guard = LoginGuard::new(1, SLOT_WAIT);
        let start = Instant::now();
        for _ in 0..FREE_FAILURES {
            guard.failed("a", start);
        }
        guard.failed("a", start + MAX_WAIT);
        assert!(guard.check("a", start + MAX_WAIT).is_ok(), "one failure after a quiet period is free again");
    }

    #[tokio::test]
    async fn password_checks_beyond_the_slots_wait_then_are_refused() {
        let guard = LoginGuard::new(1, Duration::from_millis(50));
        let held = guard.slot().await.unwrap();
        let refused = guard.slot().await.unwrap_err();
        assert_eq!((refused.status, refused.retry_after_s), (503, Some(1)));
        drop(held);
        assert!(guard.slot().await.is_ok());
    }
}
