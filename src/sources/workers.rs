//! Workers needed for a target wait (`workers_needed`): from the work waiting, the arrival and
//! completion rates over the metric's window, and the replicas the workload had over that
//! window. No I/O here: a source reads the counters and the workload's replicas; this module
//! turns what was observed into a number of replicas, or says why there is none.
//!
//! **The formula.** The throughput of one replica is what finished over the replica-seconds
//! that did it, `μ = completions / ∫ replicas dt` over the window. To finish the `W` jobs
//! waiting within the target wait `T` while keeping up with the `λ` arriving per second, the
//! workload needs `N = ⌈(λ + W / T) / μ⌉` replicas.
//!
//! **The rules**, each an observed fact, never an estimate from other numbers:
//! - nothing waits and nothing arrives: `0`;
//! - work waits (or arrives) and no replica is ready: `1`, the wake-up (no throughput can be
//!   observed without a worker, and one is the least that makes progress);
//! - replicas are ready but nothing finished in the window (jobs longer than the window, or
//!   workers stuck): an error until a job finishes, never a number;
//! - otherwise the formula, at least `1` while work waits.
//!
//! **The feedback guard.** Replicas the HPA has just added have completed nothing yet: counted
//! in the throughput at once, they would lower `μ` and raise `N`, which adds more replicas that
//! lower `μ` again. So `μ` is measured only over windows in which the ready replicas did not
//! change, and kept; while they change (a scale-up or -down inside the window), the last such
//! `μ` is used. Before any steady window, `μ` is taken over the replica-seconds actually
//! present (a replica ready for half the window counts half).

use std::collections::VecDeque;
use std::time::Duration;

use crate::model::SeriesError;
use crate::sources::kubernetes::replicas::WorkersConfig;
use crate::sources::metric::MetricConfig;
use crate::sources::rates::Rates;

/// One `workers_needed` metric's queue and workload: the readings of its completions and
/// arrivals counters, its workload's ready replicas over the window, and the throughput per
/// replica kept from the last steady window. A source holds one per such metric (one queue
/// each), feeds it at every poll, and serves what [`Workload::serve`] answers.
#[derive(Debug)]
pub struct Workload {
    /// The workload whose ready replicas run the jobs.
    pub config: WorkersConfig,
    target_wait: f64,
    window: f64,
    history: ReplicaHistory,
    kept: Throughput,
    /// Why the last reading of the replicas failed.
    failed: Option<String>,
    completions: Rates<()>,
    arrivals: Rates<()>,
}

impl Workload {
    /// The state of a metric with `config`, `target_wait` and `window`.
    pub fn new(config: WorkersConfig, target_wait: Duration, window: Duration) -> Self {
        Workload {
            config,
            target_wait: target_wait.as_secs_f64(),
            window: window.as_secs_f64(),
            history: ReplicaHistory::default(),
            kept: Throughput::default(),
            failed: None,
            completions: Rates::new(window),
            arrivals: Rates::new(window),
        }
    }

    /// The state of metric `m`, if it is a `workers_needed` one (it names its workload and
    /// target wait; the config checks make sure it does).
    pub fn of(m: &MetricConfig) -> Option<Self> {
        Some(Workload::new(
            m.workers.clone()?,
            m.target_wait?.0,
            m.window(),
        ))
    }

    /// Records a reading of the workload's ready replicas at `at` (unix seconds), or why it
    /// failed.
    pub fn replicas_read(&mut self, at: f64, ready: Result<u32, String>) {
        match ready {
            Ok(n) => {
                self.history.record(at, n, self.window);
                self.failed = None;
            }
            Err(e) => self.failed = Some(e),
        }
    }

    /// Records this poll's counter readings (at `now_s`, the source's clock) and answers the
    /// replicas needed for the work `waiting`.
    ///
    /// # Errors
    /// What was not observed: the workload, a counter, a second reading, a completion.
    pub fn serve(
        &mut self,
        now_s: f64,
        waiting: Result<f64, SeriesError>,
        completed: Result<f64, SeriesError>,
        arrived: Result<f64, SeriesError>,
    ) -> Result<f64, SeriesError> {
        // The counters are recorded whatever else fails; the workload's error is named first,
        // as it is the configuration's.
        let done = completed.and_then(|n| self.completions.observe((), now_s, n));
        let arrivals = arrived.and_then(|n| self.arrivals.observe((), now_s, n));
        if let Some(e) = &self.failed {
            return Err(SeriesError::new(e.clone()));
        }
        let waiting = waiting?;
        let (done, arrivals) = (done?, arrivals?);
        let replicas = self.history.over(self.window).ok_or_else(|| {
            SeriesError::new(format!(
                "the ready replicas of {} have been read once so far: the throughput per replica needs a second reading (the next poll)",
                self.config.describe()
            ))
        })?;
        let observed = Observed {
            waiting,
            arrivals: arrivals.rate(),
            completed: done.by,
            completed_over: done.over,
            replicas,
        };
        workers_needed(&observed, self.target_wait, &mut self.kept).map_err(SeriesError::new)
    }
}

/// The adapter's clock in unix seconds, for replica readings.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Ready replicas of a workload, as read at each poll.
#[derive(Debug, Default)]
pub struct ReplicaHistory {
    /// (time in unix seconds, ready replicas), oldest first.
    points: VecDeque<(f64, u32)>,
}

/// The replicas over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaWindow {
    /// Ready at the last reading.
    pub now: u32,
    /// Replica-seconds over the window (each reading holds until the next).
    pub replica_seconds: f64,
    /// Seconds the readings cover.
    pub span: f64,
    /// Whether every reading in the window was the same.
    pub steady: bool,
}

impl ReplicaHistory {
    /// Records `ready` replicas at `at`, keeping the readings of the last `window` seconds
    /// and the one before them (which holds at the window's start).
    pub fn record(&mut self, at: f64, ready: u32, window: f64) {
        if self.points.back().is_some_and(|(t, _)| *t >= at) {
            return;
        }
        self.points.push_back((at, ready));
        while self.points.len() > 2 && self.points[1].0 <= at - window {
            self.points.pop_front();
        }
    }

    /// The replicas over the `window` seconds before the last reading; `None` before two
    /// readings.
    pub fn over(&self, window: f64) -> Option<ReplicaWindow> {
        let &(end, now) = self.points.back()?;
        if self.points.len() < 2 {
            return None;
        }
        let start = (end - window).max(self.points.front()?.0);
        let mut replica_seconds = 0.0;
        let mut steady = true;
        for pair in self.points.iter().zip(self.points.iter().skip(1)) {
            let ((t0, n0), (t1, _)) = pair;
            let from = t0.max(start);
            if *t1 > from {
                replica_seconds += f64::from(*n0) * (t1 - from);
            }
            if *t1 > start && *n0 != now {
                steady = false;
            }
        }
        Some(ReplicaWindow {
            now,
            replica_seconds,
            span: end - start,
            steady,
        })
    }
}

/// What was observed over one window, for one queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Jobs waiting now.
    pub waiting: f64,
    /// Jobs arriving per second over the window.
    pub arrivals: f64,
    /// Jobs finished over the window (a counter's increase).
    pub completed: f64,
    /// Seconds the completions were counted over.
    pub completed_over: f64,
    /// The replicas over the same window.
    pub replicas: ReplicaWindow,
}

/// The per-replica throughput kept from the last steady window (the feedback guard).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Jobs per second one replica finished, over the last window with steady replicas.
    pub per_replica: Option<f64>,
}

/// The replicas that finish the waiting work within `target_wait` seconds while keeping up
/// with arrivals (see the module's rules); updates `kept` when the window was steady.
///
/// # Errors
/// Replicas are ready and nothing finished in the window: the throughput is unknown.
pub fn workers_needed(
    o: &Observed,
    target_wait: f64,
    kept: &mut Throughput,
) -> Result<f64, String> {
    if o.waiting <= 0.0 && o.arrivals <= 0.0 {
        return Ok(0.0);
    }
    if o.replicas.now == 0 {
        return Ok(1.0);
    }
    if o.completed <= 0.0 {
        return Err(format!(
            "{} ready replica(s) finished no job in the last {:.0} s, so how much one replica does is unknown (jobs longer than the window, or stuck workers); refusing to guess",
            o.replicas.now, o.completed_over
        ));
    }
    let per_replica = if o.replicas.steady {
        let measured = o.completed / o.completed_over / f64::from(o.replicas.now);
        kept.per_replica = Some(measured);
        measured
    } else {
        match kept.per_replica {
            Some(mu) => mu,
            None if o.replicas.replica_seconds > 0.0 => o.completed / o.replicas.replica_seconds,
            None => {
                return Err("no replica was ready during the window, yet jobs finished: the workload named in workers is not the one that runs them".into());
            }
        }
    };
    let needed = ((o.arrivals + o.waiting / target_wait) / per_replica).ceil();
    Ok(if o.waiting > 0.0 {
        needed.max(1.0)
    } else {
        needed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(n: u32) -> ReplicaWindow {
        ReplicaWindow {
            now: n,
            replica_seconds: f64::from(n) * 60.0,
            span: 60.0,
            steady: true,
        }
    }

    fn observed(waiting: f64, arrivals: f64, completed: f64, replicas: ReplicaWindow) -> Observed {
        Observed {
            waiting,
            arrivals,
            completed,
            completed_over: 60.0,
            replicas,
        }
    }

    #[test]
    fn the_formula_and_its_rules() {
        let mut kept = Throughput::default();
        // 2 replicas finished 120 jobs in 60 s: 1 job/s each. 10/s arrive, 300 wait, 30 s target:
        // (10 + 300/30) / 1 = 20 replicas.
        let o = observed(300.0, 10.0, 120.0, steady(2));
        assert_eq!(workers_needed(&o, 30.0, &mut kept), Ok(20.0));
        assert_eq!(kept.per_replica, Some(1.0));
        // Idle: nothing waits, nothing arrives.
        let idle = observed(0.0, 0.0, 0.0, steady(3));
        assert_eq!(workers_needed(&idle, 30.0, &mut kept), Ok(0.0));
        // Work waits, no replica: the wake-up.
        let asleep = observed(5.0, 0.0, 0.0, steady(0));
        assert_eq!(workers_needed(&asleep, 30.0, &mut kept), Ok(1.0));
        // Replicas, and nothing finished: an error, never a number.
        let long = observed(5.0, 0.1, 0.0, steady(2));
        let err = workers_needed(&long, 30.0, &mut kept).expect_err("no completion");
        assert!(err.contains("refusing to guess"), "{err}");
        // A little waiting work still needs one replica.
        let little = observed(1.0, 0.0, 120.0, steady(2));
        assert_eq!(workers_needed(&little, 30.0, &mut kept), Ok(1.0));
        // Arrivals alone: keep up with them.
        let flow = observed(0.0, 3.5, 120.0, steady(2));
        assert_eq!(workers_needed(&flow, 30.0, &mut kept), Ok(4.0));
    }

    #[test]
    fn replicas_just_added_do_not_feed_back() {
        let mut kept = Throughput::default();
        let o = observed(300.0, 10.0, 120.0, steady(2));
        assert_eq!(workers_needed(&o, 30.0, &mut kept), Ok(20.0));
        // The HPA adds 18 replicas for the last 5 s of the window; they have finished nothing
        // yet. Counted at once, they would make one replica look 8× slower and ask for more.
        let mut h = ReplicaHistory::default();
        h.record(0.0, 2, 60.0);
        h.record(55.0, 20, 60.0);
        h.record(60.0, 20, 60.0);
        let window = h.over(60.0).expect("two readings");
        assert!(!window.steady);
        assert_eq!(window.replica_seconds, 2.0 * 55.0 + 20.0 * 5.0);
        let after = observed(290.0, 10.0, 120.0, window);
        assert_eq!(
            workers_needed(&after, 30.0, &mut kept),
            Ok(20.0),
            "the throughput of the last steady window is kept"
        );
        assert_eq!(kept.per_replica, Some(1.0));
        // Without a steady window yet, the replica-seconds present are the measure.
        let mut fresh = Throughput::default();
        let got = workers_needed(&after, 30.0, &mut fresh).expect("a number");
        assert_eq!(got, ((10.0_f64 + 290.0 / 30.0) / (120.0 / 210.0)).ceil());
    }

    #[test]
    fn the_history_keeps_the_window_and_the_reading_before_it() {
        let mut h = ReplicaHistory::default();
        assert_eq!(h.over(10.0), None);
        for (t, n) in [
            (0.0, 1),
            (5.0, 1),
            (10.0, 3),
            (15.0, 3),
            (20.0, 3),
            (25.0, 3),
        ] {
            h.record(t, n, 10.0);
        }
        let w = h.over(10.0).expect("readings");
        assert!(w.steady, "3 ready throughout the last 10 s: {w:?}");
        assert_eq!(w.replica_seconds, 30.0);
        assert_eq!(w.span, 10.0);
        assert_eq!(w.now, 3);
        h.record(25.0, 9, 10.0);
        assert_eq!(
            h.over(10.0).map(|w| w.now),
            Some(3),
            "the same time adds nothing"
        );
    }
}
