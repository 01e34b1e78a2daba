//! `frugal report --run DIR`: `report.md` for terminals and `report.html` with SVG plots (loss
//! against tokens and against dollars, the cost of each stage, the projection to larger
//! scales). Built from what the run directory holds: config.toml, metrics.jsonl, sft/, and
//! ledger.json. A file an older run lacks is named in the report, never read as zero.

pub mod pref;
pub mod race;
pub mod svg;

use crate::scaling::{LossLaw, RunPoint};
use base::{Error, Result};
use ledger::si;
use ledger::tables::{CostConfig, Gpu};
use ledger::{duration, Ledger};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::{bar_chart, escape, line_chart, Series};

pub struct ReportOptions {
    pub cost: CostConfig,
    /// The GPU the projection prices, its utilisation, and its price per hour.
    pub gpu: &'static Gpu,
    pub gpu_mfu: f64,
    /// Other finished runs to fit the scaling law on.
    pub other_runs: Vec<PathBuf>,
    /// A peer's validation curve to race this run's pretraining against (`race::Race`).
    pub race: Option<PathBuf>,
}

/// What one run directory says about itself.
struct RunData {
    params: f64,
    /// (tokens, train loss) per step and (tokens, val loss) per evaluation.
    train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    val_bpb: Option<f64>,
    sft_train: Vec<(f64, f64)>,
    sft_val: Vec<(f64, f64)>,
    sft_report: Option<serde_json::Value>,
    /// The race against a peer's curve, when the report was asked for one.
    race: Option<race::Race>,
}

/// Loss curves from a metrics.jsonl: (tokens, train loss) per step, (tokens, val loss) per
/// evaluation, and the last val bits per byte. A missing file gives empty curves.
type Curves = (Vec<(f64, f64)>, Vec<(f64, f64)>, Option<f64>);

fn curves(path: &Path, tokens_per_step: f64) -> Curves {
    let (mut train, mut val, mut bpb) = (Vec::new(), Vec::new(), None);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(tokens) = v["step"].as_f64().map(|s| s * tokens_per_step) else {
            continue;
        };
        train.extend(v["loss"].as_f64().map(|l| (tokens, l)));
        if let Some(l) = v["val_loss"].as_f64() {
            val.push((tokens, l));
            bpb = v["val_bpb"].as_f64().or(bpb);
        }
    }
    (train, val, bpb)
}

fn tokens_per_step(t: &train::config::TrainConfig) -> f64 {
    ((t.batch_tokens / (t.batch_size * t.seq_len)).max(1) * t.batch_size * t.seq_len) as f64
}

fn read_run(run: &Path) -> Result<RunData> {
    let cfg_path = run.join("config.toml");
    if !cfg_path.is_file() {
        return Err(Error::input(
            run.display().to_string(),
            "has no config.toml: it is not a frugal run directory",
            "pass the --run directory given to frugal pretrain or frugal speedrun",
        ));
    }
    let cfg = train::Config::load(&cfg_path, &[])?;
    let params = model::Arch::from_model(&cfg.model, cfg.train.seq_len)
        .params()
        .total;
    let (train, val, val_bpb) = curves(&run.join("metrics.jsonl"), tokens_per_step(&cfg.train));
    let sft_tokens = stages::sft::SftConfig::load(&run.join("sft/config.toml"), &[])
        .map_or(0.0, |c| tokens_per_step(&c.train));
    let (sft_train, sft_val, _) = curves(&run.join("sft/metrics.jsonl"), sft_tokens);
    let sft_report = std::fs::read_to_string(run.join("sft/report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok(RunData {
        params,
        train,
        val,
        val_bpb,
        sft_train,
        sft_val,
        sft_report,
        race: None,
    })
}

/// A row of the projection: a compute budget and the best the law says it buys.
struct Target {
    /// Budget as a multiple of this run's pretraining FLOPs.
    multiple: f64,
    flops: f64,
    n: f64,
    d: f64,
    loss: f64,
    cpu_hours: f64,
    cpu_dollars: f64,
    gpu_hours: f64,
    gpu_dollars: f64,
}

struct Projection {
    law: LossLaw,
    /// This run: (pretraining dollars, final validation loss).
    run_point: (f64, f64),
    /// Model FLOP/s this machine sustained in pretraining, and its dollars per hour.
    flops_per_s: f64,
    machine_dollars_per_hour: f64,
    gpu_dollars_per_hour: f64,
    targets: Vec<Target>,
    /// (dollars, best loss) on this machine and on the GPU.
    curve_cpu: Vec<(f64, f64)>,
    curve_gpu: Vec<(f64, f64)>,
}

/// The scaling law fitted to `run` and `others` (each run's last validation loss at its
/// tokens), as the report's projection uses it; `bench/sweep.sh` saves it for `frugal plan`.
pub fn fitted_law(run: &Path, others: &[PathBuf]) -> Result<LossLaw> {
    fit_points(&read_run(run)?, others)
}

fn fit_points(run: &RunData, others: &[PathBuf]) -> Result<LossLaw> {
    let point = |d: &RunData| {
        d.val.last().map(|&(tokens, loss)| RunPoint {
            params: d.params,
            tokens,
            loss,
        })
    };
    let mut points: Vec<RunPoint> = point(run).into_iter().collect();
    for other in others {
        points.extend(point(&read_run(other)?));
    }
    LossLaw::fit(&points)
}

fn project(
    run: &RunData,
    ledger: Option<&Ledger>,
    opts: &ReportOptions,
) -> Result<Option<Projection>> {
    let (Some(&(tokens, loss)), Some(pre)) =
        (run.val.last(), ledger.and_then(|l| l.stage("pretrain")))
    else {
        return Ok(None);
    };
    let law = fit_points(run, &opts.other_runs)?;
    if pre.wall_s <= 0.0 || pre.model_flops <= 0.0 {
        return Ok(None);
    }
    let flops_per_s = pre.model_flops / pre.wall_s;
    let threads = pre.core_hours * 3600.0 / pre.wall_s;
    let machine_dollars_per_hour = threads * opts.cost.prices.cpu_core_hour;
    let gpu_dollars_per_hour = opts.cost.gpu_hour_price(opts.gpu.name)?;
    let gpu_flops_per_s = opts.gpu.bf16_tflops * 1e12 * opts.gpu_mfu;
    // Budgets in the law's own convention (6·N·D), from this run's to a million times it.
    let run_flops = 6.0 * run.params * tokens;
    let targets = [1.0, 10.0, 100.0, 1e3, 1e4, 1e6]
        .iter()
        .map(|&multiple| {
            let flops = multiple * run_flops;
            let (loss, n, d) = law.best_loss(flops);
            let cpu_hours = flops / flops_per_s / 3600.0;
            let gpu_hours = flops / gpu_flops_per_s / 3600.0;
            Target {
                multiple,
                flops,
                n,
                d,
                loss,
                cpu_hours,
                cpu_dollars: cpu_hours * machine_dollars_per_hour,
                gpu_hours,
                gpu_dollars: gpu_hours * gpu_dollars_per_hour,
            }
        })
        .collect();
    let curve = |dollars_per_hour: f64, flops_per_s: f64| -> Vec<(f64, f64)> {
        (0..=40)
            .map(|i| {
                let dollars = 10f64.powf(-2.0 + 9.0 * i as f64 / 40.0);
                let flops = dollars / dollars_per_hour * 3600.0 * flops_per_s;
                (dollars, law.best_loss(flops).0)
            })
            .collect()
    };
    Ok(Some(Projection {
        run_point: (pre.dollars, loss),
        curve_cpu: curve(machine_dollars_per_hour, flops_per_s),
        curve_gpu: curve(gpu_dollars_per_hour, gpu_flops_per_s),
        law,
        flops_per_s,
        machine_dollars_per_hour,
        gpu_dollars_per_hour,
        targets,
    }))
}

pub struct Written {
    pub markdown: PathBuf,
    pub html: PathBuf,
}

/// Writes `report.md` and `report.html` into `run`.
pub fn write_report(run: &Path, opts: &ReportOptions) -> Result<Written> {
    let mut data = read_run(run)?;
    if let Some(peer) = &opts.race {
        let race = race::Race::read(run, peer)?;
        base::fs::write_atomic(&run.join("race.svg"), race.chart().as_bytes())?;
        data.race = Some(race);
    }
    let mut ledger = Ledger::read(run)?;
    if let Some(l) = ledger.as_mut() {
        l.price(&opts.cost);
    }
    let projection = project(&data, ledger.as_ref(), opts)?;
    let md = markdown(run, &data, ledger.as_ref(), projection.as_ref(), opts);
    let html = html(run, &data, ledger.as_ref(), projection.as_ref(), opts, &md);
    let written = Written {
        markdown: run.join("report.md"),
        html: run.join("report.html"),
    };
    base::fs::write_atomic(&written.markdown, md.as_bytes())?;
    base::fs::write_atomic(&written.html, html.as_bytes())?;
    Ok(written)
}

fn ledger_table(ledger: Option<&Ledger>) -> String {
    let Some(l) = ledger else {
        return "No ledger.json in this run directory: it was trained before frugal kept ledgers, \
                so its costs are unknown (not zero). Runs trained now write one.\n"
            .into();
    };
    let mut o = String::from(
        "| stage | sessions | wall | CPU-s | tokens | kernel FLOPs | MFU | energy Wh | dollars | g CO2e | note |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in l.stages.iter().chain(std::iter::once(&l.total)) {
        let note = match (&s.inherited_from, s.complete) {
            (_, false) => "unfinished".to_string(),
            (Some(from), _) => format!("{}; from {from}", s.detail),
            (None, _) => s.detail.clone(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.3}{} | {:.4} | {:.2} | {} |",
            s.stage,
            s.sessions,
            duration(s.wall_s),
            s.cpu_s,
            ledger::count(s.tokens),
            if s.kernel_flops > 0.0 {
                format!("{:.3e}", s.kernel_flops)
            } else {
                "-".into()
            },
            s.mfu.map_or("-".into(), |m| format!("{:.0}%", 100.0 * m)),
            1e3 * s.energy_kwh,
            if s.energy_measured { "" } else { " (est.)" },
            s.dollars,
            1e3 * s.kg_co2,
            note
        );
    }
    let missing = l.missing();
    if !missing.is_empty() {
        let _ = writeln!(
            o,
            "\nNot in the ledger: {}. Their outputs were made before frugal kept ledgers, or elsewhere; their cost is unknown, not zero.",
            missing.join(", ")
        );
    }
    let c = &l.assumptions;
    let _ = writeln!(
        o,
        "\nDevice: {}. Energy {}. Prices: ${} per core-hour on wall time x cores held; PUE {}; grid {} kg CO2e/kWh. \
         MFU is model FLOPs (PaLM convention) over wall time x the measured GEMM peak; kernel FLOPs are every matrix product done, evaluation and sampling included.",
        l.device, l.energy_source, c.prices.cpu_core_hour, c.power.pue, c.grid.kg_co2_per_kwh
    );
    o
}

fn markdown(
    run: &Path,
    d: &RunData,
    ledger: Option<&Ledger>,
    p: Option<&Projection>,
    opts: &ReportOptions,
) -> String {
    let mut o = format!("# frugal report: {}\n\n", run.display());
    let _ = writeln!(o, "## Model\n");
    let _ = writeln!(o, "- parameters: {}", si(d.params));
    match d.val.last() {
        Some(&(tokens, loss)) => {
            let _ = writeln!(
                o,
                "- pretraining: {} tokens, val loss {loss:.4} nats/token{}",
                si(tokens),
                d.val_bpb
                    .map_or(String::new(), |b| format!(", {b:.4} bits/byte"))
            );
        }
        None => o.push_str("- pretraining: no validation loss in metrics.jsonl\n"),
    }
    if let Some(r) = &d.sft_report {
        let f = &r["format"];
        let _ = writeln!(
            o,
            "- SFT: {} steps, val loss {:.4} on assistant tokens; {} of {} held-out prompts answered well-formed",
            r["steps"],
            r["val_loss"].as_f64().unwrap_or(f64::NAN),
            f["well_formed"],
            f["prompts"]
        );
    }
    match crate::gaps::read(run) {
        Ok(gaps) => {
            if let Some(t) = crate::gaps::markdown(&gaps) {
                let _ = writeln!(o, "\n## Data this run went without\n\n{t}");
            }
        }
        Err(e) => {
            let _ = writeln!(o, "\nThe run's data gaps could not be read: {e}");
        }
    }
    let _ = writeln!(o, "\n## Report card\n");
    match eval::card::markdown(run) {
        Ok(Some(card)) => o.push_str(&card),
        Ok(None) => {
            let _ = writeln!(
                o,
                "Not evaluated yet: `frugal eval --run {}` scores every stage on the standard benchmarks.",
                run.display()
            );
        }
        Err(e) => {
            let _ = writeln!(o, "The evaluation results could not be read: {e}");
        }
    }
    match crate::report::pref::markdown(run) {
        Ok(Some(t)) => {
            let _ = writeln!(o, "\n## Preference stages\n\n{t}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(o, "\nThe preference stages' reports could not be read: {e}");
        }
    }
    if let Some(race) = &d.race {
        let _ = writeln!(o, "\n{}", race.markdown());
    }
    let _ = writeln!(o, "\n## Cost by stage\n\n{}", ledger_table(ledger));
    o.push_str("## Projection\n\n");
    match p {
        None => o.push_str(
            "Needs a finished pretraining with a validation loss and its ledger entry; this run has not both.\n",
        ),
        Some(p) => {
            let _ = writeln!(
                o,
                "Law: L(N, D) = {:.3} + {:.1}/N^{:.2} + {:.1}/D^{:.2}; {}.\n\
                 This machine sustained {:.1} GFLOP/s of model FLOPs in pretraining (${:.3}/h); the GPU column assumes {} at {:.0}% MFU (${:.2}/h).\n\
                 Each budget is spent the compute-optimal way (the size and tokens with the lowest predicted loss at 6·N·D FLOPs); x1 is this run's own budget, so its row shows what a better split of the same compute would buy. \
                 Losses are in this run's units (its tokenizer and data). With fewer than five runs the law's shape is Chinchilla's: an assumption, not a measurement.\n",
                p.law.e, p.law.a, p.law.alpha, p.law.b, p.law.beta, p.law.source,
                p.flops_per_s / 1e9, p.machine_dollars_per_hour, opts.gpu.full_name, 100.0 * opts.gpu_mfu, p.gpu_dollars_per_hour
            );
            o.push_str("| budget | FLOPs | params | tokens | predicted loss | this machine | its cost | GPU-hours | GPU cost |\n|---|---|---|---|---|---|---|---|---|\n");
            for t in &p.targets {
                let _ = writeln!(
                    o,
                    "| x{} | {:.2e} | {} | {} | {:.3} | {} | ${} | {} | ${} |",
                    if t.multiple < 1e4 {
                        format!("{:.0}", t.multiple)
                    } else {
                        format!("1e{:.0}", t.multiple.log10())
                    },
                    t.flops,
                    si(t.n),
                    si(t.d),
                    t.loss,
                    duration(t.cpu_hours * 3600.0),
                    si(t.cpu_dollars),
                    si(t.gpu_hours),
                    si(t.gpu_dollars)
                );
            }
        }
    }
    o
}

fn html(
    run: &Path,
    d: &RunData,
    ledger: Option<&Ledger>,
    p: Option<&Projection>,
    opts: &ReportOptions,
    md: &str,
) -> String {
    let mut o = String::from("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/>");
    let _ = write!(
        o,
        "<title>frugal report: {}</title>",
        escape(&run.display().to_string())
    );
    o.push_str("<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}</style></head><body>");
    // The text sections are the markdown's, turned into HTML block by block.
    let mut in_table = false;
    for line in md.lines() {
        if let Some(row) = line.strip_prefix('|') {
            if line.starts_with("|---") {
                continue;
            }
            if !in_table {
                o.push_str("<table>");
                in_table = true;
            }
            o.push_str("<tr>");
            for cell in row.trim_end_matches('|').split('|') {
                let _ = write!(o, "<td>{}</td>", escape(cell.trim()));
            }
            o.push_str("</tr>");
            continue;
        }
        if in_table {
            o.push_str("</table>");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = write!(o, "<h2>{}</h2>", escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = write!(o, "<h1>{}</h1>", escape(h));
        } else if let Some(li) = line.strip_prefix("- ") {
            let _ = write!(o, "<p>• {}</p>", escape(li));
        } else if !line.trim().is_empty() {
            let _ = write!(o, "<p>{}</p>", escape(line));
        }
    }
    if in_table {
        o.push_str("</table>");
    }
    o.push_str("<h2>Plots</h2>");
    let fig = |o: &mut String, svg: String| {
        let _ = write!(o, "<figure>{svg}</figure>");
    };
    fig(
        &mut o,
        line_chart(
            "Pretraining loss against tokens",
            "tokens",
            "loss (nats/token)",
            &[
                Series {
                    name: "train".into(),
                    points: d.train.clone(),
                },
                Series {
                    name: "validation".into(),
                    points: d.val.clone(),
                },
            ],
            false,
        ),
    );
    if !d.sft_train.is_empty() {
        fig(
            &mut o,
            line_chart(
                "SFT loss on assistant tokens",
                "tokens",
                "loss (nats/token)",
                &[
                    Series {
                        name: "train".into(),
                        points: d.sft_train.clone(),
                    },
                    Series {
                        name: "validation".into(),
                        points: d.sft_val.clone(),
                    },
                ],
                false,
            ),
        );
    }
    if let Some(l) = ledger {
        // Dollars spent by the time each step was done: the stages before pretraining, then
        // pretraining's own spend spread evenly over its tokens.
        let before: f64 = l
            .stages
            .iter()
            .take_while(|s| s.stage != "pretrain")
            .map(|s| s.dollars)
            .sum();
        if let Some(pre) = l.stage("pretrain").filter(|s| s.tokens > 0) {
            let per_token = pre.dollars / pre.tokens as f64;
            let to_dollars = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
                pts.iter()
                    .map(|&(t, loss)| (before + t * per_token, loss))
                    .collect()
            };
            fig(
                &mut o,
                line_chart(
                    "Pretraining loss against dollars spent",
                    "dollars",
                    "loss (nats/token)",
                    &[
                        Series {
                            name: "train".into(),
                            points: to_dollars(&d.train),
                        },
                        Series {
                            name: "validation".into(),
                            points: to_dollars(&d.val),
                        },
                    ],
                    false,
                ),
            );
        }
        let bars: Vec<(String, f64)> = l
            .stages
            .iter()
            .map(|s| (s.stage.clone(), s.dollars))
            .collect();
        fig(
            &mut o,
            bar_chart("Cost by stage (dollars)", &bars, |v| format!("${v:.4}")),
        );
        let bars: Vec<(String, f64)> = l
            .stages
            .iter()
            .map(|s| (s.stage.clone(), s.wall_s))
            .collect();
        fig(&mut o, bar_chart("Wall time by stage", &bars, duration));
    }
    let bars: Vec<(String, f64)> = eval::card::read_all(run)
        .unwrap_or_default()
        .iter()
        .flat_map(|s| {
            s.tasks
                .iter()
                .filter(|t| t.error.is_none() && t.chance.is_some())
                .filter_map(move |t| Some((format!("{} {}", t.task, s.stage), 100.0 * t.score?)))
        })
        .collect();
    if !bars.is_empty() {
        fig(
            &mut o,
            bar_chart("Benchmark accuracy by stage (%)", &bars, |v| {
                format!("{v:.1}%")
            }),
        );
    }
    for (title, y, series) in crate::report::pref::curves(run) {
        fig(&mut o, line_chart(&title, "step", &y, &series, false));
    }
    if let Some(race) = &d.race {
        fig(&mut o, race.chart());
    }
    if let Some(p) = p {
        fig(
            &mut o,
            line_chart(
                "Projection: lowest loss a budget buys (compute-optimal size)",
                "dollars",
                "loss (nats/token)",
                &[
                    Series {
                        name: "this machine, measured speed".into(),
                        points: p.curve_cpu.clone(),
                    },
                    Series {
                        name: format!("{} at {:.0}% MFU", opts.gpu.name, 100.0 * opts.gpu_mfu),
                        points: p.curve_gpu.clone(),
                    },
                    Series {
                        name: "this run".into(),
                        points: vec![p.run_point],
                    },
                ],
                true,
            ),
        );
    }
    o.push_str("</body></html>\n");
    o
}
