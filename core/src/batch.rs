//! `serve()`'s batch: how many tasks one task request runs, and for how long.

use crate::error::{invalid, Result};
use crate::scalar::Scalar;
use std::time::{Duration, Instant};

/// The options of `serve()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// Seconds after which the request claims no more tasks.
    pub batch_time: f64,
    /// Most tasks one request runs.
    pub max_tasks: i64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            batch_time: 5.0,
            max_tasks: 100,
        }
    }
}

impl ServeOptions {
    /// Sets option `name`; an `InvalidTask` naming it when the name or the
    /// value is wrong.
    pub fn set(&mut self, name: &str, value: &Scalar) -> Result<()> {
        match (name, value) {
            ("batch_time", v) => match v.as_number() {
                Some(t) if t > 0.0 && t <= 86400.0 => self.batch_time = t,
                _ => {
                    return Err(invalid!(
                        "option 'batch_time' must be a number of seconds greater than 0, got {}",
                        v.describe()
                    ))
                }
            },
            ("max_tasks", Scalar::Int(n)) if *n >= 1 => self.max_tasks = *n,
            ("max_tasks", v) => {
                return Err(invalid!(
                    "option 'max_tasks' must be an integer of 1 or more, got {}",
                    v.describe()
                ))
            }
            _ => {
                return Err(invalid!(
                    "unknown option '{name}' for serve(); known options: batch_time, max_tasks"
                ))
            }
        }
        Ok(())
    }
}

/// One request's run through its tasks.
#[derive(Debug)]
pub struct Batch {
    started: Instant,
    budget: Duration,
    max_tasks: i64,
    ran: i64,
}

impl Batch {
    /// Starts a batch now.
    pub fn start(options: &ServeOptions) -> Batch {
        Batch {
            started: Instant::now(),
            budget: Duration::from_secs_f64(options.batch_time),
            max_tasks: options.max_tasks,
            ran: 0,
        }
    }

    /// Whether to claim another task: neither the count nor the time is spent.
    pub fn wants_more(&self) -> bool {
        self.ran < self.max_tasks && self.started.elapsed() < self.budget
    }

    /// Counts a claimed task.
    pub fn ran_one(&mut self) {
        self.ran += 1;
    }

    /// Tasks claimed so far.
    pub fn ran(&self) -> i64 {
        self.ran
    }

    /// How many tasks to claim in the next write: none once the batch is
    /// spent; else as many as the tasks so far took [`AHEAD_WINDOW`] to run,
    /// 1 to [`MAX_AHEAD`], never more than the batch has left.
    pub fn ahead(&self) -> usize {
        if !self.wants_more() {
            return 0;
        }
        let left = usize::try_from(self.max_tasks - self.ran).unwrap_or(1);
        let per_task = self.started.elapsed().as_nanos() / self.ran.max(1) as u128;
        let fit = AHEAD_WINDOW.as_nanos() / per_task.max(1);
        usize::try_from(fit)
            .unwrap_or(MAX_AHEAD)
            .clamp(1, MAX_AHEAD)
            .min(left)
    }
}

/// How long the tasks one write claims should take to run, judged by the
/// batch so far: short, so a task claimed ahead waits little.
pub const AHEAD_WINDOW: Duration = Duration::from_millis(250);

/// Most tasks one write claims.
pub const MAX_AHEAD: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_stops_at_its_count_or_its_time() {
        let mut b = Batch::start(&ServeOptions {
            batch_time: 60.0,
            max_tasks: 2,
        });
        assert!(b.wants_more());
        b.ran_one();
        b.ran_one();
        assert!(!b.wants_more());
        assert_eq!(b.ran(), 2);
        let quick = Batch::start(&ServeOptions {
            batch_time: 0.001,
            max_tasks: 100,
        });
        std::thread::sleep(Duration::from_millis(5));
        assert!(!quick.wants_more());
    }

    #[test]
    fn quick_tasks_are_claimed_several_at_a_time_within_what_the_batch_has_left() {
        let mut b = Batch::start(&ServeOptions {
            batch_time: 60.0,
            max_tasks: 20,
        });
        assert!((1..=MAX_AHEAD).contains(&b.ahead()));
        for _ in 0..10 {
            b.ran_one();
        }
        assert_eq!(
            b.ahead(),
            MAX_AHEAD.min(10),
            "ten quick tasks: as many as are left"
        );
        for _ in 0..10 {
            b.ran_one();
        }
        assert_eq!(b.ahead(), 0, "spent");
        // Slower tasks (one of 100 ms here) are claimed fewer at a time.
        let mut slow = Batch::start(&ServeOptions::default());
        std::thread::sleep(Duration::from_millis(100));
        slow.ran_one();
        assert!(slow.ahead() <= 3, "{}", slow.ahead());
    }

    #[test]
    fn bad_options_are_named() {
        let mut o = ServeOptions::default();
        let err = |o: &mut ServeOptions, n: &str, v: Scalar| o.set(n, &v).unwrap_err().to_string();
        assert!(err(&mut o, "batch_time", Scalar::Int(0)).contains("'batch_time' must be"));
        assert!(err(&mut o, "max_tasks", Scalar::Float(1.5)).contains("'max_tasks' must be"));
        assert!(err(&mut o, "speed", Scalar::Int(1)).contains("unknown option 'speed'"));
        assert_eq!(o, ServeOptions::default(), "nothing changed");
        o.set("max_tasks", &Scalar::Int(7)).unwrap();
        assert_eq!(o.max_tasks, 7);
    }
}
