//! The pretraining loop, top to bottom: set up the run directory (or check it on --resume),
//! build the model and data stream, then for each step accumulate gradients over micro-batches,
//! guard against bad losses, clip, update, log, and periodically evaluate, sample and checkpoint.
//!
//! On several ranks (mpirun, srun, torchrun) each computes the gradient of its slice of the
//! global batch and `dist::Replica` sums them; rank 0 alone logs, evaluates, samples and
//! writes the run directory. `train.batch_tokens` is the global batch, so a run's arithmetic
//! is the same at any world size and a checkpoint resumes on any number of ranks.

use crate::sample::{generate, SamplingParams};
use base::fs::write_atomic;
use base::{Error, Result};
use bpe::Tokenizer;
use data::loader::{open_splits, validation_windows, Cursor, Loader};
use model::Llama;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tensor::Rng;
use train::checkpoint::{self, TrainState};
use train::clock::{due, LoopClock};
use train::config::Config;
use train::dist::{Collective, Replica, Solo};
use train::optim::Optimizer;
use train::ranks;
use train::schedule::lr_scale;
use train::step::open_metrics;
use train::validation::evaluate_with_load;

/// What a run reports at its end.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub params: usize,
    pub steps: usize,
    pub tokens: u64,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub final_loss: f64,
    pub val_loss: f64,
    pub val_bpb: f64,
    pub sample: String,
}

/// Runs (or, with `resume`, continues) pretraining of `cfg` in `run`. `log` receives one line
/// per step and every event worth a line.
pub fn pretrain(cfg: &Config, run: &Path, resume: bool, log: impl FnMut(&str)) -> Result<Summary> {
    pretrain_on(&Solo, cfg, run, resume, log)
}

/// `pretrain` as one rank of `comm`: every rank calls it with the same config; rank 0's `log`
/// receives the lines, the others' nothing.
pub fn pretrain_on(
    comm: &dyn Collective,
    cfg: &Config,
    run: &Path,
    resume: bool,
    mut log: impl FnMut(&str),
) -> Result<Summary> {
    let (rank, world) = (comm.rank(), comm.world());
    let lead = rank == 0;
    let mut log = move |line: &str| {
        if lead {
            log(line)
        }
    };
    train::dist::agree(comm, "resolved config", &cfg.to_toml())?;
    let data = cfg.data.as_ref().ok_or_else(|| {
        Error::config(
            "config",
            "has no [data] table",
            "add [data] with shards = ... and tokenizer = ...",
        )
    })?;
    let tok = Tokenizer::load(&data.tokenizer).map_err(|e| {
        Error::input(
            data.tokenizer.display().to_string(),
            e.to_string(),
            "run `frugal tokenizer train` first",
        )
    })?;
    if tok.vocab_size() != cfg.model.vocab_size {
        return Err(Error::config(
            "model.vocab_size",
            format!(
                "{} differs from the tokenizer's {}",
                cfg.model.vocab_size,
                tok.vocab_size()
            ),
            "set model.vocab_size to the tokenizer's vocabulary size",
        ));
    }
    let (_, train_stream, val_stream) = open_splits(&data.shards, &tok)?;
    let _precision = train::precision(&cfg.train)?;
    let bos = tok.special_id("<|bos|>").ok_or_else(|| {
        Error::input(
            "tokenizer",
            "has no <|bos|>",
            "train the tokenizer with frugal",
        )
    })?;

    if lead {
        prepare_run_dir(cfg, run, resume, &tok)?;
    }

    let t = &cfg.train;
    let (b, seq) = (t.batch_size, t.seq_len);
    // batch_tokens is the global batch: the ranks share it, each accumulating `micro`
    // micro-batches of its own.
    if !t.batch_tokens.is_multiple_of(world * b * seq) {
        return Err(Error::config(
            "train.batch_tokens",
            format!(
                "{} is not a multiple of ranks × batch_size × seq_len = {world} × {b} × {seq}",
                t.batch_tokens
            ),
            "choose batch_tokens, batch_size and the number of ranks to fit",
        ));
    }
    let micro = (t.batch_tokens / (world * b * seq)).max(1);
    let step_tokens = micro * world * b * seq;
    let mut model = Llama::init(cfg.model.clone(), t.seed);
    let unsplittable = train::optim::unsplittable(t, &model.params);
    let mut replica = Replica::new(comm, &cfg.dist, model.params.len(), &unsplittable);
    let own = replica.owned();
    let mut opt = Optimizer::new_shard(t, &model.params, own.clone());
    let mut state = TrainState {
        step: 0,
        cursor: Cursor::default(),
        loss_ema: None,
        sample_rng: Rng::new(t.seed ^ 0x5A).state(),
        tokens_seen: 0,
        elapsed_s: 0.0,
    };
    if resume {
        if let Some((dir, restored)) = ranks::restore(&replica, run, t, &mut model, &mut opt)? {
            state = restored;
            log(&format!(
                "resumed from {} (step {})",
                dir.display(),
                state.step
            ));
        }
    }
    let mut loader = Loader::new(train_stream, bos, seq, t.seed, state.cursor)?;
    let val = validation_windows(&val_stream, seq, t.eval_tokens);
    let metrics_path = run.join("metrics.jsonl");
    let mut metrics = match lead {
        true => Some(open_metrics(&metrics_path, state.step)?),
        false => None,
    };
    let mut emit = |v: serde_json::Value| -> Result<()> {
        match metrics.as_mut() {
            Some(m) => writeln!(m, "{v}").map_err(|e| Error::io(&metrics_path, e)),
            None => Ok(()),
        }
    };

    // Rank 0's figure is the one logged and billed; a bench on every rank at once would only
    // compete for the cores it measures.
    let peak_gflops = match lead {
        true => tensor::peak::bench_gemm(5).peak_gflops,
        false => f64::NAN,
    };
    let flops_per_step =
        model::arch::flops_per_token(&cfg.model, cfg.train.seq_len) * step_tokens as f64;
    let arch = model::Arch::from_model(&cfg.model, seq).params();
    let active = match arch.active < arch.total {
        true => format!(" ({:.2}M active per token)", arch.active / 1e6),
        false => String::new(),
    };
    let ranks = match world {
        1 => String::new(),
        _ => format!(
            "{world} ranks ({}{}) x ",
            comm.backend(),
            if replica.zero().is_some() {
                ", ZeRO-1"
            } else {
                ""
            }
        ),
    };
    log(&format!(
        "model {:.2}M params{active} | KV cache {} B/token | {ranks}{micro} x {b} x {seq} tokens/step | {} windows/epoch | {} val tokens | gemm peak {peak_gflops:.0} GFLOP/s ({} products)",
        model.params.len() as f64 / 1e6,
        cfg.model.n_layers * cfg.model.kv_floats_per_token() * 4,
        loader.windows_per_epoch(),
        val.len() * seq,
        t.precision.name()
    ));
    log(&format!(
        "optimizer state {:.2} MiB per rank (the whole state is {:.2} MiB)",
        opt.state_bytes() as f64 / (1 << 20) as f64,
        (2 * model.params.len() * 4) as f64 / (1 << 20) as f64
    ));
    // The ledger: this invocation's spend, after the data stages' from the shards' ledger.
    let mut meter = match lead && state.step < t.steps {
        true => Some(
            ledger::Meter::start_after(run, "pretrain", Some(peak_gflops), &[&data.shards])?
                .ranks(world),
        ),
        false => None,
    };
    let mut ws = model.workspace(b, seq);
    let mut grads = vec![0f32; model.params.len()];
    let (mut x, mut y) = (vec![0u32; b * seq], vec![0u32; b * seq]);
    let mut sample_rng = Rng::from_state(state.sample_rng);
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        ..Default::default()
    };
    let prompt = [vec![bos], tok.encode(&t.sample_prompt)].concat();
    let (mut bad_streak, mut last_loss, mut last_val, mut last_sample) =
        (0usize, f64::NAN, (f64::NAN, f64::NAN), String::new());
    let mut step_ms = Vec::new();
    let mut injected = std::collections::HashSet::new();
    let mut rollbacks: Vec<usize> = Vec::new();
    let clock = LoopClock::start(&state);

    while state.step < t.steps {
        let step = state.step;
        if cfg.dist.fault_step == step + 1 && cfg.dist.fault_rank == rank {
            inject_fault(&cfg.dist.fault, rank, step + 1);
        }
        let t0 = Instant::now();
        let lr = lr_scale(t, step);
        grads.fill(0.0);
        let (mut sum, mut aux, mut mtp) = (0f64, 0f64, 0f64);
        for _ in 0..micro {
            loader.next_batch_of(&mut x, &mut y, rank, world);
            sum += model
                .forward_backward(&x, &y, &mut grads, 1.0 / step_tokens as f32, &mut ws)
                .0;
            aux += ws.balance_loss();
            mtp += ws.mtp_loss() / (micro * world) as f64;
        }
        let mut load = ws.take_expert_load();
        // The step's loss and expert loads over all ranks: every rank decides alike.
        let mut totals: Vec<f64> = [sum, aux, mtp]
            .into_iter()
            .chain(load.iter().flatten().map(|&c| c as f64))
            .collect();
        comm.all_reduce_f64(&mut totals)?;
        let (sum, aux, mtp) = (totals[0], totals[1], totals[2]);
        for (c, total) in load.iter_mut().flatten().zip(&totals[3..]) {
            *c = *total as u64;
        }
        if let Some(m) = meter.as_mut() {
            m.add(step_tokens as u64, flops_per_step);
            m.save_every(30.0)?;
        }
        let mut loss = sum / step_tokens as f64;
        // An injected fault fires once per step number, as a data fault would not recur after
        // a rollback moved past its batch.
        if t.inject_nan_steps.contains(&(step + 1)) && injected.insert(step + 1) {
            loss = f64::NAN;
        }
        let spike = state.loss_ema.is_some_and(|ema| {
            step >= t.warmup_steps.max(10) && loss > t.spike_factor as f64 * ema
        });
        if !loss.is_finite() || spike {
            bad_streak += 1;
            let why = if loss.is_finite() {
                format!(
                    "loss {loss:.4} > {} x running mean {:.4}",
                    t.spike_factor,
                    state.loss_ema.unwrap_or(0.0)
                )
            } else {
                format!("loss is {loss}")
            };
            log(&format!(
                "step {} | loss guard: {why}; update skipped ({bad_streak} in a row)",
                step + 1
            ));
            emit(serde_json::json!({"step": step + 1, "skipped": why}))?;
            if bad_streak > t.max_bad_steps {
                if rollbacks.iter().filter(|&&s| s == step).count() >= 2 {
                    return Err(Error::input(
                        run.display().to_string(),
                        format!(
                            "the loss diverged at step {} again after two rollbacks",
                            step + 1
                        ),
                        "lower train.lr, raise train.warmup_steps, or check the data around this point",
                    ));
                }
                let cursor = loader.cursor;
                if let Some((dir, restored)) =
                    ranks::restore(&replica, run, t, &mut model, &mut opt)?
                {
                    rollbacks.push(step);
                    // Keep moving through the data: replaying the same batches would replay the fault.
                    state = TrainState {
                        cursor,
                        sample_rng: state.sample_rng,
                        tokens_seen: state.tokens_seen,
                        elapsed_s: state.elapsed_s,
                        ..restored
                    };
                    log(&format!(
                        "loss guard: {bad_streak} bad steps in a row; rolled back to {} (step {})",
                        dir.display(),
                        state.step
                    ));
                } else {
                    log("loss guard: no checkpoint to roll back to yet; continuing");
                }
                bad_streak = 0;
            } else {
                state.step += 1;
            }
            continue;
        }
        bad_streak = 0;
        // Sum the ranks' gradients (of this rank's shard, under ZeRO-1), clip by the global
        // norm, update what this rank owns, and share the updated shards.
        replica.sync_grads(&mut grads)?;
        let norm = replica.grad_norm(&grads)?;
        if t.grad_clip > 0.0 && norm > t.grad_clip as f64 {
            let k = (t.grad_clip as f64 / norm) as f32;
            grads[own.clone()].par_iter_mut().for_each(|g| *g *= k);
        }
        opt.update(&mut model.params.data[own.clone()], &grads[own.clone()], lr);
        replica.all_gather(&mut model.params.data, None)?;
        model.balance_experts(&load);
        state.loss_ema = Some(state.loss_ema.map_or(loss, |e| 0.9 * e + 0.1 * loss));
        state.tokens_seen += step_tokens as u64;
        state.step += 1;
        state.cursor = loader.cursor;
        last_loss = loss;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        step_ms.push(ms);
        let tps = step_tokens as f64 / (ms / 1e3);
        let mfu = flops_per_step / (ms / 1e3) / 1e9 / peak_gflops;
        // Steps are numbered by how many updates are done, as checkpoints are.
        let dollars = meter.as_ref().map_or(0.0, |m| m.dollars());
        // Experts: max/mean tokens per expert, worst layer, and the balance loss if any; the
        // multi-token prediction loss.
        let imbalance = model::load_imbalance(&load);
        let mut experts = match imbalance.iter().copied().reduce(f64::max) {
            Some(worst) if aux > 0.0 => {
                format!(
                    " | load max/mean {worst:.2} | balance loss {:.2e}",
                    aux / (micro * world * b) as f64
                )
            }
            Some(worst) => format!(" | load max/mean {worst:.2}"),
            None => String::new(),
        };
        if cfg.model.mtp.is_some() {
            experts = format!(" | mtp loss {mtp:.4}{experts}");
        }
        log(&format!("step {} | loss {loss:.4} | lr {:.2e} | {ms:.0} ms | {tps:.0} tok/s | mfu {:.0}% | grad norm {norm:.3}{experts} | ${dollars:.4}", state.step, t.lr * lr, 100.0 * mfu));
        let mut line = serde_json::json!({"step": state.step, "loss": loss, "lr": t.lr * lr, "ms": ms, "tok_s": tps, "mfu": mfu, "grad_norm": norm});
        if !imbalance.is_empty() {
            // Per MoE layer: max/mean load, and tokens per expert.
            line["expert_imbalance"] = serde_json::json!(imbalance);
            line["expert_load"] =
                serde_json::json!(load.iter().filter(|c| !c.is_empty()).collect::<Vec<_>>());
            line["balance_loss"] = serde_json::json!(aux / (micro * world * b) as f64);
        }
        if cfg.model.mtp.is_some() {
            line["mtp_loss"] = serde_json::json!(mtp);
        }
        emit(line)?;

        if lead && due(state.step, t.steps, t.eval_every) && !val.is_empty() {
            let load;
            (last_val, load) = evaluate_with_load(&model, &tok, &val, b);
            let imbalance = model::load_imbalance(&load);
            let experts = match imbalance.iter().copied().reduce(f64::max) {
                Some(worst) => format!(" | val load max/mean {worst:.2}"),
                None => String::new(),
            };
            log(&format!(
                "step {} | val loss {:.4} | val bpb {:.4}{experts}",
                state.step, last_val.0, last_val.1
            ));
            let mut line = serde_json::json!({"step": state.step, "val_loss": last_val.0, "val_bpb": last_val.1});
            if !imbalance.is_empty() {
                line["val_expert_imbalance"] = serde_json::json!(imbalance);
            }
            emit(line)?;
        }
        if lead && due(state.step, t.steps, t.sample_every) {
            let ids = generate(
                &model,
                &prompt,
                t.sample_tokens,
                params,
                Some(bos),
                &mut sample_rng,
            );
            last_sample = format!(
                "{}{}",
                t.sample_prompt,
                tok.decode_lossy(&ids).unwrap_or_default()
            );
            log(&format!("step {} | sample: {last_sample:?}", state.step));
        }
        if due(state.step, t.steps, t.checkpoint_every) {
            state.sample_rng = sample_rng.state();
            state.elapsed_s = clock.wall_s();
            // The bill first: killed between the two, the ledger bills steps that will be
            // redone (and billed again), which they were; never the reverse.
            if let Some(m) = &meter {
                m.save()?;
            }
            if world > 1 {
                ranks::check_identical(comm, &model.params.data)?;
            }
            if let Some(dir) = ranks::save(&mut replica, run, t, &model, &opt, &state)? {
                log(&format!(
                    "step {} | checkpoint {}",
                    state.step,
                    dir.display()
                ));
            }
        }
    }
    if world > 1 {
        let hash = ranks::check_identical(comm, &model.params.data)?;
        log(&format!(
            "parameters identical on all {world} ranks (fnv64 {hash:016x})"
        ));
    }
    if let Some(mut m) = meter {
        m.detail(format!("{} steps", state.step));
        m.finish()?;
    }
    // A run resumed after its last step did no work now: report from its metrics instead.
    let mut logged_mfu = Vec::new();
    if step_ms.is_empty() {
        let text = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            step_ms.extend(v["ms"].as_f64());
            logged_mfu.extend(v["mfu"].as_f64());
            last_loss = v["loss"].as_f64().unwrap_or(last_loss);
            if let (Some(l), Some(b)) = (v["val_loss"].as_f64(), v["val_bpb"].as_f64()) {
                last_val = (l, b);
            }
        }
    }
    let median_ms = base::stats::median(&step_ms);
    let tokens_per_s = step_tokens as f64 / (median_ms / 1e3);
    Ok(Summary {
        params: model.params.len(),
        steps: state.step,
        tokens: state.tokens_seen,
        wall_s: clock.wall_s(),
        tokens_per_s,
        mfu: if logged_mfu.is_empty() {
            flops_per_step / (median_ms / 1e3) / 1e9 / peak_gflops
        } else {
            base::stats::median(&logged_mfu)
        },
        final_loss: last_loss,
        val_loss: last_val.0,
        val_bpb: last_val.1,
        sample: last_sample,
    })
}

/// Rank 0's run directory: a new run must not overwrite one; a resumed run must be the same
/// config, but may change [dist]. Then the resolved config and the tokenizer are written.
fn prepare_run_dir(cfg: &Config, run: &Path, resume: bool, tok: &Tokenizer) -> Result<()> {
    let cfg_path = run.join("config.toml");
    if resume {
        let old = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        // Resolved again, so that a field added since the run began, at its default, matches.
        let origin = cfg_path.display().to_string();
        if Config::parse(&old, &origin, &[])?.to_toml_for_resume() != cfg.to_toml_for_resume() {
            return Err(Error::config(
                cfg_path.display().to_string(),
                "the run was made with a different config",
                "resume with the same config and --set overrides, or start a new run directory",
            ));
        }
    } else if !checkpoint::list(run)?.is_empty() {
        return Err(Error::config(
            run.display().to_string(),
            "already holds checkpoints",
            "pass --resume to continue it, or choose a new --run directory",
        ));
    }
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    write_atomic(&cfg_path, cfg.to_toml().as_bytes())?;
    tok.save(&run.join("tokenizer.json")).map_err(|e| {
        Error::input(
            run.display().to_string(),
            e.to_string(),
            "check the run directory is writable",
        )
    })
}

/// Fault injection for the tests of a dying or hanging rank (`dist.fault`).
fn inject_fault(fault: &str, rank: usize, step: usize) {
    eprintln!("rank {rank}: injected fault {fault:?} at step {step}");
    match fault {
        // Dies the way a crash does: by a signal, without a word to the other ranks.
        "exit" => std::process::abort(),
        _ => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
    }
}
