//! The engine thread: one OS thread owns the model and runs continuous batching
//! ([`engine::Batcher`]) while the async handlers submit jobs and read tokens back.
//!
//! Between forward passes the thread admits waiting jobs up to `max_batch`, drops the
//! sequences whose client went away (its receiver is closed), runs one step, and sends every
//! new token to its job's channel. Jobs wait in a bounded queue; a full queue refuses new ones
//! at once ([`Submit::Full`] → 429), so load beyond capacity costs the server nothing.
//! Shutdown is two-phase: [`Scheduler::drain`] refuses new jobs and lets the running ones
//! finish; [`Scheduler::stop`] ends what is left, each job told it was cut by the shutdown.

use crate::metrics::Metrics;
use data::chat::ChatTokens;
use engine::{Batcher, Completion, Finish, Report, Request, TokenEvent, TokenLogprob, Tools};
use model::Llama;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// What a job hears from the engine.
#[derive(Debug)]
pub enum Out {
    Token {
        token: u32,
        forced: bool,
        /// Its log-probability, and with the first token the prompt's, as the job's report
        /// asks.
        logprob: Option<TokenLogprob>,
        prompt_logprobs: Vec<TokenLogprob>,
    },
    /// The last message. `shutdown`: the server ended the job before it finished.
    Done {
        completion: Completion,
        shutdown: bool,
    },
    /// The engine refused the request (it is checked before submission, so this is a bug).
    Failed(String),
}

pub struct Job {
    pub request: Request,
    /// The log-probabilities to send with the tokens.
    pub report: Report,
    pub tx: UnboundedSender<Out>,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Jobs waiting for a place in the batch; more are refused.
    pub max_queue: usize,
    /// A pause after every step (tests use it to hold a generation open).
    pub step_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 64,
            max_queue: 256,
            step_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Submit {
    Queued,
    Full,
    Closed,
}

struct Flags {
    draining: AtomicBool,
    stop: AtomicBool,
}

pub struct Scheduler {
    tx: Mutex<Option<SyncSender<Job>>>,
    flags: Arc<Flags>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Scheduler {
    /// Starts the engine thread over `model`, with the calculator tool when `tools` is given.
    pub fn start(
        model: Arc<Llama>,
        tools: Option<(Arc<bpe::Tokenizer>, ChatTokens)>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Scheduler {
        let (tx, rx) = mpsc::sync_channel::<Job>(limits.max_queue.max(1));
        let flags = Arc::new(Flags {
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let (f, m) = (flags.clone(), metrics.clone());
        let threads = rayon::current_num_threads();
        let thread = std::thread::Builder::new()
            .name("frugal-engine".into())
            .spawn(move || {
                let tools = tools.as_ref().map(|(tok, t)| Tools { tok, t: *t });
                // The loop runs on a worker of a rayon pool of its own, so that a forward
                // pass's parallel parts start on the thread that asks for them instead of
                // waking the pool from outside at every kernel (this thread only waits for the
                // loop). Its own pool, not the global one: the loop holds its worker for the
                // server's life, and a worker of a shared pool that waits inside a kernel may
                // steal another server's loop (two servers in one process, as the tests run
                // them) and never come back to finish its own kernel.
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("frugal-engine-{i}"))
                    .build()
                    .expect("the engine's thread pool starts");
                pool.scope(|s| s.spawn(move |_| run(&model, tools.as_ref(), &rx, limits, &f, &m)));
            })
            .expect("the engine thread starts");
        Scheduler {
            tx: Mutex::new(Some(tx)),
            flags,
            metrics,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues a job, or says why not, at once.
    pub fn submit(&self, job: Job) -> Submit {
        if self.flags.draining.load(SeqCst) {
            return Submit::Closed;
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Submit::Closed;
        };
        self.metrics.queued.fetch_add(1, SeqCst);
        match tx.try_send(job) {
            Ok(()) => Submit::Queued,
            Err(e) => {
                self.metrics.queued.fetch_sub(1, SeqCst);
                match e {
                    TrySendError::Full(_) => Submit::Full,
                    TrySendError::Disconnected(_) => Submit::Closed,
                }
            }
        }
    }

    /// Refuses new jobs from now on; the queued and running ones go on.
    pub fn drain(&self) {
        self.flags.draining.store(true, SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.flags.draining.load(SeqCst)
    }

    /// Whether the engine thread still runs: a thread that ended on a bug serves nothing,
    /// and `/health` must say so rather than `ok`.
    pub fn engine_alive(&self) -> bool {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A scheduler whose engine thread has already ended, as one that panicked would have.
    #[cfg(test)]
    pub(crate) fn with_ended_engine() -> Scheduler {
        let (tx, _rx) = mpsc::sync_channel::<Job>(1);
        let thread = std::thread::spawn(|| {});
        while !thread.is_finished() {
            std::thread::yield_now();
        }
        Scheduler {
            tx: Mutex::new(Some(tx)),
            flags: Arc::new(Flags {
                draining: AtomicBool::new(false),
                stop: AtomicBool::new(false),
            }),
            metrics: Arc::new(Metrics::default()),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Jobs queued or running.
    pub fn in_flight(&self) -> usize {
        self.metrics.queued.load(SeqCst) + self.metrics.running.load(SeqCst)
    }

    /// Ends every job now (each gets `Done { shutdown: true }`) and waits for the thread.
    pub fn stop(&self) {
        self.drain();
        self.flags.stop.store(true, SeqCst);
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    model: &Llama,
    tools: Option<&Tools>,
    rx: &mpsc::Receiver<Job>,
    limits: Limits,
    flags: &Flags,
    metrics: &Metrics,
) {
    let mut batch = Batcher::new(model, tools);
    let mut jobs: HashMap<usize, UnboundedSender<Out>> = HashMap::new();
    let mut next_id = 0usize;
    let mut closed = false;
    let mut admit =
        |job: Job, batch: &mut Batcher<Llama>, jobs: &mut HashMap<usize, UnboundedSender<Out>>| {
            metrics.queued.fetch_sub(1, SeqCst);
            if job.tx.is_closed() {
                // The client left while waiting.
                metrics.cancelled.fetch_add(1, Relaxed);
                return;
            }
            let id = next_id;
            next_id += 1;
            let prompt = job.request.prompt.len() as u64;
            match batch.admit_reporting(id, job.request, job.report) {
                Ok(()) => {
                    metrics.prompt_tokens.fetch_add(prompt, Relaxed);
                    metrics.running.fetch_add(1, SeqCst);
                    jobs.insert(id, job.tx);
                }
                Err(e) => {
                    let _ = job.tx.send(Out::Failed(e.to_string()));
                }
            }
        };
    loop {
        let stopping = flags.stop.load(SeqCst);
        if batch.is_empty() {
            if closed || stopping {
                break;
            }
            metrics.idle();
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => admit(job, &mut batch, &mut jobs),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        while !stopping && batch.len() < limits.max_batch {
            match rx.try_recv() {
                Ok(job) => admit(job, &mut batch, &mut jobs),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        // Sequences whose client went away, or every one at a hard stop.
        let gone: Vec<usize> = batch
            .ids()
            .filter(|id| stopping || jobs[id].is_closed())
            .collect();
        for id in gone {
            batch.cancel(id);
        }
        let t0 = Instant::now();
        let mut tokens = 0u64;
        let finished = batch.step(|e: TokenEvent| {
            tokens += 1;
            jobs[&e.seq]
                .send(Out::Token {
                    token: e.token,
                    forced: e.forced,
                    logprob: e.logprob,
                    prompt_logprobs: e.prompt_logprobs,
                })
                .is_ok()
        });
        if tokens > 0 {
            metrics.step(tokens, t0.elapsed());
        }
        for (id, completion) in finished {
            let Some(tx) = jobs.remove(&id) else {
                continue;
            };
            metrics.running.fetch_sub(1, SeqCst);
            if completion.finish == Finish::Cancelled {
                metrics.cancelled.fetch_add(1, Relaxed);
            }
            let _ = tx.send(Out::Done {
                completion,
                shutdown: stopping,
            });
        }
        if stopping {
            refuse_queued(rx, metrics);
        }
        if !limits.step_delay.is_zero() {
            std::thread::sleep(limits.step_delay);
        }
    }
    refuse_queued(rx, metrics);
}

/// Tells every job still queued that the server ended it.
fn refuse_queued(rx: &mpsc::Receiver<Job>, metrics: &Metrics) {
    while let Ok(job) = rx.try_recv() {
        metrics.queued.fetch_sub(1, SeqCst);
        let _ = job.tx.send(Out::Done {
            completion: Completion {
                tokens: Vec::new(),
                finish: Finish::Cancelled,
                stop_token: None,
                prompt_tokens: 0,
                prompt_logprobs: Vec::new(),
            },
            shutdown: true,
        });
    }
}
