//! `frugal eval`: every chosen task on every stage of a run, results in `RUN/eval/<stage>.json`
//! (written after each task, so a killed evaluation resumes where it stopped), the cost in the
//! run's ledger.

use crate::generate;
use crate::loglik::{self, Scored};
use crate::metrics;
use crate::prompt::{self, LlRequest};
use crate::{tasks, GenItem, Items, Loaded, McItem, Metric, Sources, Task};
use base::{Error, Result};
use data::chat::ChatFormat;
use ledger::Meter;
use model::Llama;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use train::checkpoint;

/// A task to run and, optionally, how many of its items (a seeded random subset).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    pub limit: Option<usize>,
}

impl TaskSpec {
    /// Parses "hellaswag,arc_easy,mmlu:500" ("all" for every task); names are checked.
    pub fn parse_list(s: &str) -> Result<Vec<TaskSpec>> {
        let known: Vec<&str> = tasks::all().iter().map(|t| t.name()).collect();
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, limit) = match part.split_once(':') {
                Some((n, l)) => {
                    let l = l.parse::<usize>().map_err(|_| {
                        Error::input(
                            format!("--tasks {part}"),
                            format!("{l:?} is not a number of items"),
                            "write name:N, e.g. mmlu:500",
                        )
                    })?;
                    (n, Some(l))
                }
                None => (part, None),
            };
            if name == "all" {
                out.extend(known.iter().map(|n| TaskSpec {
                    name: n.to_string(),
                    limit,
                }));
            } else if known.contains(&name) {
                out.push(TaskSpec {
                    name: name.to_string(),
                    limit,
                });
            } else {
                return Err(Error::input(
                    format!("--tasks {part}"),
                    format!("unknown task {name:?}"),
                    format!("choose from: {}", known.join(", ")),
                ));
            }
        }
        Ok(out)
    }
}

pub struct EvalOptions {
    /// Empty: every task.
    pub tasks: Vec<TaskSpec>,
    /// Items per task when the task names none (None: all).
    pub limit: Option<usize>,
    /// Few-shot examples for every task (None: each task's default).
    pub shots: Option<usize>,
    /// Stage names (base, sft, pref); empty: every stage with a checkpoint.
    pub stages: Vec<String>,
    /// The data directory of scripts/fetch-data.sh (benchmarks under raw/).
    pub data: PathBuf,
    /// Seeds the few-shot draws and the --limit subsets.
    pub seed: u64,
    /// Tokens per scoring batch.
    pub batch_tokens: usize,
    /// Recompute results that are already in RUN/eval/.
    pub force: bool,
    /// Writes every scored request (tokens, log-likelihood) as JSONL into this directory, for
    /// cross-checking with another implementation.
    pub dump: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            tasks: Vec::new(),
            limit: None,
            shots: None,
            stages: Vec::new(),
            data: PathBuf::from("data"),
            seed: 1234,
            batch_tokens: 4096,
            force: false,
            dump: None,
        }
    }
}

/// A trained stage of a run: where its checkpoints are.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: &'static str,
    pub dir: PathBuf,
    /// The stage answers in the chat format.
    pub chat: bool,
}

/// The stages of `run` that have a checkpoint, in the recipe's order (`checkpoint::STAGES`);
/// every stage after pretraining answers in the chat format.
pub fn stages(run: &Path) -> Result<Vec<Stage>> {
    let mut out = Vec::new();
    for &(name, sub) in checkpoint::STAGES {
        let dir = run.join(sub);
        if !checkpoint::list(&dir)?.is_empty() {
            let chat = name != "base";
            out.push(Stage { name, dir, chat });
        }
    }
    Ok(out)
}

/// One task's numbers on one stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    pub source: String,
    /// The headline metric's name and value.
    pub metric: String,
    pub score: Option<f64>,
    pub acc: Option<f64>,
    pub acc_norm: Option<f64>,
    /// The score of guessing: mean of 1/choices (0 for open answers).
    pub chance: Option<f64>,
    /// (score - chance) / (1 - chance): 0 at chance, 1 when perfect.
    pub centered: Option<f64>,
    /// Items scored, and how many the split holds.
    pub n: usize,
    pub of: usize,
    pub shots: usize,
    pub limit: Option<usize>,
    /// Items whose prompt lost tokens from the left to fit the context.
    pub truncated: usize,
    /// Malformed rows left out, and the first one's message.
    pub skipped: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_example: Option<String>,
    /// Tokens the model ran a forward pass for (shared prefixes once).
    pub tokens: u64,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A few generated replies (generative tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<(String, String, String)>,
}

impl TaskResult {
    /// Half-width of the score's 95% interval (normal approximation to the binomial,
    /// 1.96·√(p(1−p)/n)), for accuracies; None for bits per byte and unscored tasks.
    pub fn ci95(&self) -> Option<f64> {
        let p = self
            .score
            .filter(|_| self.metric != "bits_per_byte" && self.n > 0)?;
        Some(1.96 * (p * (1.0 - p) / self.n as f64).sqrt())
    }
}

/// Items for a seeded subset whose 95% interval is at most `half_width` wide on either side
/// at any accuracy (the widest is at p = 0.5): n = 1.96² · 0.25 / half_width².
pub fn items_for_half_width(half_width: f64) -> usize {
    (1.96f64.powi(2) * 0.25 / (half_width * half_width)).ceil() as usize
}

/// Every task's result on one stage, as written to `RUN/eval/<stage>.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageResults {
    pub stage: String,
    pub checkpoint: String,
    pub seed: u64,
    pub tasks: Vec<TaskResult>,
    /// Mean centred score over the tasks that have one (CORE-style).
    pub centered_mean: Option<f64>,
    /// The tasks the centred mean is over.
    pub centered_over: Vec<String>,
}

impl StageResults {
    pub fn path(run: &Path, stage: &str) -> PathBuf {
        run.join("eval").join(format!("{stage}.json"))
    }

    pub fn read(path: &Path) -> Result<Option<StageResults>> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("unreadable results: {e}"),
                "delete it; `frugal eval` writes it again",
            )
        })
    }

    fn write(&mut self, path: &Path) -> Result<()> {
        let scored: Vec<&TaskResult> = self.tasks.iter().filter(|t| t.centered.is_some()).collect();
        self.centered_mean = (!scored.is_empty())
            .then(|| scored.iter().filter_map(|t| t.centered).sum::<f64>() / scored.len() as f64);
        self.centered_over = scored.iter().map(|t| t.task.clone()).collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let json = serde_json::to_string_pretty(self).expect("results serialise");
        base::fs::write_atomic(path, json.as_bytes())
    }

    fn put(&mut self, r: TaskResult) {
        match self.tasks.iter_mut().find(|t| t.task == r.task) {
            Some(t) => *t = r,
            None => self.tasks.push(r),
        }
    }
}

/// Evaluates the stages of `run` on the chosen tasks; `log` gets a line per task.
pub fn evaluate(
    run: &Path,
    opts: &EvalOptions,
    mut log: impl FnMut(&str),
) -> Result<Vec<StageResults>> {
    let trained = checkpoint::load_trained(run, false)?;
    let (cfg, tok) = (trained.cfg, trained.tok);
    let fmt = ChatFormat::for_run(&tok, run)?;
    let mut chosen = stages(run)?;
    if !opts.stages.is_empty() {
        for s in &opts.stages {
            if !chosen.iter().any(|c| c.name == s) {
                let have: Vec<&str> = chosen.iter().map(|c| c.name).collect();
                return Err(Error::input(
                    format!("--stage {s}"),
                    format!(
                        "{} has no {s} checkpoint (it has: {})",
                        run.display(),
                        have.join(", ")
                    ),
                    "train that stage first, or leave out --stage",
                ));
            }
        }
        chosen.retain(|c| opts.stages.iter().any(|s| s == c.name));
    }
    let specs = if opts.tasks.is_empty() {
        TaskSpec::parse_list("all")?
    } else {
        opts.tasks.clone()
    };
    let src = Sources {
        raw: opts.data.join("raw"),
        run: run.to_path_buf(),
    };
    if let Some(d) = &opts.dump {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let peak = tensor::peak::bench_gemm(5).peak_gflops;
    let mut meter = Meter::start(run, "eval", Some(peak))?;
    let flops_per_token = model::arch::flops_per_token(&cfg.model, cfg.train.seq_len) / 3.0;
    let mut all = Vec::new();
    for stage in &chosen {
        let (_, ckpt) = checkpoint::list(&stage.dir)?
            .pop()
            .expect("stages() checked");
        let model = checkpoint::load_weights(&ckpt, &cfg.model)?;
        let path = StageResults::path(run, stage.name);
        let mut results = match StageResults::read(&path)? {
            Some(r) if r.checkpoint == ckpt.display().to_string() && r.seed == opts.seed => r,
            _ => StageResults {
                stage: stage.name.to_string(),
                checkpoint: ckpt.display().to_string(),
                seed: opts.seed,
                ..Default::default()
            },
        };
        for spec in &specs {
            let task = tasks::find(&spec.name).expect("parse_list checked the name");
            let limit = spec.limit.or(opts.limit);
            // A chat model answers generative tasks 0-shot in its own format.
            let shots = if stage.chat && task.metric() == Metric::ExactMatch {
                0
            } else {
                opts.shots.unwrap_or(task.shots())
            };
            let done = results.tasks.iter().find(|t| t.task == spec.name);
            if let Some(t) = done.filter(|t| {
                !opts.force && t.error.is_none() && t.limit == limit && t.shots == shots
            }) {
                log(&format!(
                    "{} | {} | present: {}",
                    stage.name,
                    t.task,
                    line(t)
                ));
                continue;
            }
            let t0 = Instant::now();
            let run_one = Ctx {
                model: &model,
                fmt: &fmt,
                stage,
                opts,
                shots,
                limit,
            };
            let mut r = match task.load(&src).and_then(|l| run_one.task(task.as_ref(), l)) {
                Ok(r) => r,
                // A broken task is reported and the others go on.
                Err(e) => TaskResult {
                    task: task.name().into(),
                    source: task.source().into(),
                    metric: task.metric().name().into(),
                    shots,
                    limit,
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            };
            r.seconds = t0.elapsed().as_secs_f64();
            meter.add(r.tokens, r.tokens as f64 * flops_per_token);
            meter.save()?;
            log(&format!("{} | {} | {}", stage.name, r.task, line(&r)));
            results.put(r);
            results.write(&path)?;
        }
        results.tasks.sort_by_key(|t| specs_order(&t.task));
        results.write(&path)?;
        all.push(results);
    }
    let tasks_run: usize = all.iter().map(|s| s.tasks.len()).sum();
    meter.detail(format!("{} stages, {tasks_run} task results", all.len()));
    meter.finish()?;
    Ok(all)
}

/// Card order: the order of `tasks::all()`.
fn specs_order(name: &str) -> usize {
    tasks::all()
        .iter()
        .position(|t| t.name() == name)
        .unwrap_or(usize::MAX)
}

/// One line about a result, for logs.
pub fn line(r: &TaskResult) -> String {
    if let Some(e) = &r.error {
        return format!("FAILED: {}", e.lines().next().unwrap_or(""));
    }
    let mut s = format!("{} {:.4}", r.metric, r.score.unwrap_or(f64::NAN));
    if let Some(c) = r.chance {
        s += &format!(" (chance {c:.3})");
    }
    s += &format!(
        " | {} of {} items, {}-shot | {:.1} s",
        r.n, r.of, r.shots, r.seconds
    );
    if r.truncated > 0 {
        s += &format!(" | {} truncated", r.truncated);
    }
    if r.skipped > 0 {
        s += &format!(" | {} malformed rows skipped", r.skipped);
    }
    s
}

/// A seeded random subset of `n` indices of `len`, in order (all of them without a limit).
fn subset(len: usize, limit: Option<usize>, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    let Some(k) = limit.filter(|&k| k < len) else {
        return idx;
    };
    let mut rng = tensor::Rng::new(seed);
    for j in 0..k {
        let r = j + rng.below((len - j) as u64) as usize;
        idx.swap(j, r);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// What evaluating one task on one stage needs.
struct Ctx<'a> {
    model: &'a Llama,
    fmt: &'a ChatFormat<'a>,
    stage: &'a Stage,
    opts: &'a EvalOptions,
    shots: usize,
    limit: Option<usize>,
}

impl Ctx<'_> {
    fn task(&self, task: &dyn Task, loaded: Loaded) -> Result<TaskResult> {
        let mut r = TaskResult {
            task: task.name().into(),
            source: task.source().into(),
            metric: task.metric().name().into(),
            of: loaded.items.len(),
            shots: self.shots,
            limit: self.limit,
            skipped: loaded.skipped.count,
            skipped_example: loaded.skipped.first.clone(),
            ..Default::default()
        };
        if loaded.items.is_empty() {
            return Err(Error::input(
                task.source(),
                format!(
                    "no usable items{}",
                    loaded
                        .skipped
                        .first
                        .map_or(String::new(), |m| format!(" (e.g. {m})"))
                ),
                "re-fetch the benchmark files: scripts/fetch-data.sh --group eval",
            ));
        }
        match &loaded.items {
            Items::Mc(items) => {
                let pool = match &loaded.shots_from {
                    Some(Items::Mc(p)) => Some(p.as_slice()),
                    _ => None,
                };
                self.multiple_choice(task, items, pool, &mut r)?
            }
            Items::Gen(items) => {
                let pool = match &loaded.shots_from {
                    Some(Items::Gen(p)) => p.as_slice(),
                    _ => items.as_slice(),
                };
                self.generative(task, items, pool, &mut r)?
            }
            Items::Heldout(dir) => self.bits_per_byte(dir, &mut r)?,
        }
        if let (Some(s), Some(c)) = (r.score, r.chance) {
            r.centered = Some(metrics::centered(s, c));
        }
        Ok(r)
    }

    fn multiple_choice(
        &self,
        task: &dyn Task,
        items: &[McItem],
        pool: Option<&[McItem]>,
        r: &mut TaskResult,
    ) -> Result<()> {
        let tok = self.fmt.tok;
        let bos = self.fmt.bos();
        let ctx = self.model.cfg.context_len;
        let idx = subset(items.len(), self.limit, self.opts.seed);
        let (pool_items, exclude_self) = match pool {
            Some(p) => (p, false),
            None => (items, true),
        };
        let groups_of: Vec<u32> = pool_items.iter().map(|i| i.group).collect();
        let requests: Vec<Vec<LlRequest>> = idx
            .par_iter()
            .map(|&i| {
                let item = &items[i];
                let picks = prompt::pick(
                    &groups_of,
                    item.group,
                    self.shots,
                    exclude_self.then_some(i),
                    self.opts.seed,
                    i,
                );
                let shots: Vec<String> = picks.iter().map(|&j| pool_items[j].solved()).collect();
                let prefix = prompt::prefix(&item.preamble, &shots);
                prompt::mc_requests(tok, bos, item, &prefix, ctx)
            })
            .collect();
        let bar = base::progress::bar(idx.len() as u64, task.name());
        let scores = loglik::score(self.model, &requests, self.opts.batch_tokens, |done| {
            bar.set_position(done as u64)
        });
        bar.finish_and_clear();
        let m = metrics::multiple_choice(items, &idx, &scores);
        r.n = idx.len();
        for reqs in &requests {
            r.truncated += usize::from(reqs.iter().any(|q| q.truncated));
            r.tokens += loglik::fed_tokens(reqs);
        }
        if task.metric() == Metric::Greedy {
            // One continuation: right when greedy decoding writes it; guessing scores 0.
            r.acc = Some(m.greedy);
            r.chance = Some(0.0);
        } else {
            r.acc = Some(m.acc);
            r.acc_norm = Some(m.acc_norm);
            r.chance = Some(m.chance);
        }
        r.score = if task.metric() == Metric::AccNorm {
            r.acc_norm
        } else {
            r.acc
        };
        if let Some(dir) = &self.opts.dump {
            self.dump(dir, task, &idx, items, &requests, &scores)?;
        }
        Ok(())
    }

    /// Every request and its score as JSON lines: `<stage>-<task>.jsonl`.
    fn dump(
        &self,
        dir: &Path,
        task: &dyn Task,
        idx: &[usize],
        items: &[McItem],
        requests: &[Vec<LlRequest>],
        scores: &[Vec<Scored>],
    ) -> Result<()> {
        let path = dir.join(format!("{}-{}.jsonl", self.stage.name, task.name()));
        let mut out = Vec::new();
        for ((&i, reqs), s) in idx.iter().zip(requests).zip(scores) {
            for (j, (q, x)) in reqs.iter().zip(s).enumerate() {
                let v = serde_json::json!({
                    "item": i, "choice": j, "gold": items[i].gold,
                    "chars": items[i].choices[j].1.chars().count(),
                    "tokens": q.tokens, "cont_start": q.cont_start,
                    "logprob": x.logprob, "greedy": x.greedy,
                });
                writeln!(out, "{v}").expect("writing to memory");
            }
        }
        base::fs::write_atomic(&path, &out)
    }

    fn generative(
        &self,
        task: &dyn Task,
        items: &[GenItem],
        pool: &[GenItem],
        r: &mut TaskResult,
    ) -> Result<()> {
        let idx = subset(items.len(), self.limit, self.opts.seed);
        let same = std::ptr::eq(items.as_ptr(), pool.as_ptr());
        let groups = vec![0u32; pool.len()];
        let shots = self.shots;
        let work: Vec<(&GenItem, Vec<String>)> = idx
            .iter()
            .map(|&i| {
                let picks = prompt::pick(&groups, 0, shots, same.then_some(i), self.opts.seed, i);
                (
                    &items[i],
                    picks.iter().map(|&j| pool[j].solution.clone()).collect(),
                )
            })
            .collect();
        let bar = base::progress::bar(idx.len() as u64, task.name());
        let answers = generate::answer(self.model, self.fmt, &work, self.stage.chat, 16, |d| {
            bar.set_position(d as u64)
        })?;
        bar.finish_and_clear();
        let correct = answers.iter().filter(|a| a.correct).count();
        r.n = idx.len();
        r.score = Some(correct as f64 / idx.len().max(1) as f64);
        r.acc = r.score;
        r.chance = Some(0.0);
        r.truncated = answers.iter().filter(|a| a.truncated).count();
        r.tokens = answers.iter().map(|a| a.fed as u64).sum();
        r.examples = work
            .iter()
            .zip(&answers)
            .take(3)
            .map(|((item, _), a)| (item.question.clone(), a.reply.clone(), item.answer.clone()))
            .collect();
        Ok(())
    }

    fn bits_per_byte(&self, shards: &Path, r: &mut TaskResult) -> Result<()> {
        let tok = self.fmt.tok;
        let (_, _, val) = data::loader::open_splits(shards, tok)?;
        let seq = self.model.cfg.context_len;
        // Spread over the whole split; the speedrun's training log validates on these same
        // windows (configs/cpu-speedrun.toml asks for as many tokens).
        let tokens = self.limit.map_or(1 << 18, |n| n * seq);
        let windows = data::loader::validation_windows(&val, seq, tokens);
        if windows.is_empty() {
            return Err(Error::input(
                shards.display().to_string(),
                "the validation split is shorter than one context",
                "prepare more data, or leave out the bpb task",
            ));
        }
        let (_, bpb) = train::validation::evaluate(self.model, tok, &windows, 8);
        r.n = windows.len();
        r.of = val.len() / seq;
        r.score = Some(bpb);
        r.tokens = (windows.len() * seq) as u64;
        Ok(())
    }
}
