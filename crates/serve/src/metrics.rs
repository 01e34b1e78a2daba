//! The server's Prometheus metrics: counters, gauges and fixed-bucket histograms kept in
//! atomics (updated from the engine thread and the handlers without a lock), rendered in the
//! text exposition format at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A histogram over fixed upper bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microseconds, so it can be an integer atomic.
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Relaxed);
            match self.bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {total}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
                }
            }
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const STEP: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Responses by endpoint and status class, as (endpoint, status) → count.
type Responses = Mutex<Vec<((String, u16), u64)>>;

pub struct Metrics {
    started: Instant,
    responses: Responses,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    pub rejected: AtomicU64,
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub steps: AtomicU64,
    pub ttft: Histogram,
    pub latency: Histogram,
    pub step_time: Histogram,
    /// Generated tokens per second over the last completed window of about a second.
    rate: Mutex<Rate>,
}

struct Rate {
    window_start: Instant,
    tokens: u64,
    last: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            responses: Mutex::new(Vec::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            steps: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY),
            latency: Histogram::new(LATENCY),
            step_time: Histogram::new(STEP),
            rate: Mutex::new(Rate {
                window_start: Instant::now(),
                tokens: 0,
                last: 0.0,
            }),
        }
    }
}

impl Metrics {
    pub fn response(&self, endpoint: &str, status: u16) {
        let mut r = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        match r
            .iter_mut()
            .find(|((e, s), _)| e == endpoint && *s == status)
        {
            Some((_, n)) => *n += 1,
            None => r.push(((endpoint.to_string(), status), 1)),
        }
    }

    /// One engine step that produced `tokens` tokens in `took`.
    pub fn step(&self, tokens: u64, took: Duration) {
        self.steps.fetch_add(1, Relaxed);
        self.generated_tokens.fetch_add(tokens, Relaxed);
        self.step_time.observe(took);
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        r.tokens += tokens;
        let secs = r.window_start.elapsed().as_secs_f64();
        if secs >= 1.0 {
            r.last = r.tokens as f64 / secs;
            r.tokens = 0;
            r.window_start = Instant::now();
        }
    }

    /// The engine went idle: the rate falls to zero rather than keeping its last value.
    pub fn idle(&self) {
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        if r.window_start.elapsed() >= Duration::from_secs(1) {
            r.last = 0.0;
            r.tokens = 0;
            r.window_start = Instant::now();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "frugal_prompt_tokens_total",
            "Prompt tokens prefilled.",
            self.prompt_tokens.load(Relaxed),
        );
        counter(
            "frugal_generation_tokens_total",
            "Tokens generated (tool output included).",
            self.generated_tokens.load(Relaxed),
        );
        counter(
            "frugal_requests_cancelled_total",
            "Generations ended early: the client went away, or the server shut down.",
            self.cancelled.load(Relaxed),
        );
        counter(
            "frugal_requests_rejected_total",
            "Requests refused with 429 because the queue was full.",
            self.rejected.load(Relaxed),
        );
        counter(
            "frugal_engine_steps_total",
            "Forward passes of the running batch.",
            self.steps.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP frugal_http_responses_total Responses by endpoint and status.\n# TYPE frugal_http_responses_total counter"
        );
        let mut rows = self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        rows.sort();
        for ((endpoint, status), n) in rows {
            let _ = writeln!(
                out,
                "frugal_http_responses_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "frugal_queue_depth",
            "Requests waiting for a place in the running batch.",
            self.queued.load(Relaxed) as f64,
        );
        gauge(
            "frugal_running_sequences",
            "Sequences in the running batch.",
            self.running.load(Relaxed) as f64,
        );
        let rate = self.rate.lock().unwrap_or_else(|e| e.into_inner()).last;
        gauge(
            "frugal_generation_tokens_per_second",
            "Tokens generated per second over the last second of work.",
            rate,
        );
        gauge(
            "frugal_uptime_seconds",
            "Seconds since the server started.",
            self.started.elapsed().as_secs_f64(),
        );
        self.ttft.render(
            &mut out,
            "frugal_time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
        );
        self.latency.render(
            &mut out,
            "frugal_request_duration_seconds",
            "From a generating request's arrival to its last token.",
        );
        self.step_time.render(
            &mut out,
            "frugal_engine_step_seconds",
            "One forward pass and sampling step of the running batch.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_the_text_parses() {
        let m = Metrics::default();
        m.ttft.observe(Duration::from_millis(3));
        m.ttft.observe(Duration::from_millis(30));
        m.ttft.observe(Duration::from_secs(500));
        m.response("chat", 200);
        m.response("chat", 200);
        m.response("chat", 429);
        let text = m.render();
        assert!(text.contains("frugal_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("frugal_time_to_first_token_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("frugal_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("frugal_time_to_first_token_seconds_count 3"));
        assert!(text.contains("frugal_http_responses_total{endpoint=\"chat\",status=\"200\"} 2"));
        // Every sample line is `name[{labels}] number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
