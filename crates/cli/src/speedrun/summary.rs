//! The speedrun's end: what each stage produced, three fixed-seed samples, wall time per stage
//! against its budget, the ledger, and the report card.

use app::plan::{duration, SpeedrunPlan, SHARES};
use stages::sample::{continue_text, SamplingParams};
use std::path::Path;
use std::time::Instant;

/// Wall time of each stage of this command, in order.
pub struct Clock {
    start: Instant,
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Clock {
    pub fn start() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Ends the stage that began at the previous lap.
    pub fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.laps
            .push((stage, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }

    fn total(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn of(&self, stage: &str) -> f64 {
        self.laps
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|l| l.1)
            .sum()
    }
}

/// The prompts of the fixed-seed samples: openings of a novel, a speech and a story, in the
/// registers of the corpus's books and addresses.
const SAMPLE_PROMPTS: [&str; 3] = [
    "It was a dark and stormy night",
    "Fellow citizens, the state of the Union",
    "She opened the door and saw",
];

pub fn print(
    run: &Path,
    s: &stages::pretrain::Summary,
    results: &[eval::StageResults],
    plan: &SpeedrunPlan,
    clock: &Clock,
) -> anyhow::Result<()> {
    super::stage("summary");
    pretraining(s);
    tuning(run);
    card_line(results);
    for g in app::gaps::read(run)? {
        println!("went without  {}: {} — {}", g.stage, g.what, g.consequence);
    }

    super::stage("samples: the pretrained model, seeds 1-3 (temperature 0.8, top-k 40)");
    for line in samples(run)? {
        println!("{line}");
    }

    super::stage("wall time per stage");
    let ledger = ledger::Ledger::read(run)?;
    print!("{}", stage_table(plan, clock, ledger.as_ref()));

    super::stage("cost: what each stage spent (ledger.json)");
    let cost = ledger::CostConfig::load(None)?;
    if let Some(mut ledger) = ledger {
        ledger.price(&cost);
        println!("{}", ledger.summary());
    }
    let w = app::report::write_report(run, &crate::cost::default_report_options()?)?;
    if let Some(card) = eval::card::markdown(run)? {
        super::stage("report card");
        print!("{card}");
    }
    println!(
        "report        {} and {} (frugal report --run {} rewrites them)",
        w.markdown.display(),
        w.html.display(),
        run.display()
    );
    Ok(())
}

fn pretraining(s: &stages::pretrain::Summary) {
    println!("params        {:.2}M", s.params as f64 / 1e6);
    println!("tokens        {} in {} steps", s.tokens, s.steps);
    println!(
        "train time    {:.1} s (pretraining, across resumptions)",
        s.wall_s
    );
    println!(
        "throughput    {:.0} tok/s (median step), MFU {:.0}%",
        s.tokens_per_s,
        100.0 * s.mfu
    );
    println!(
        "final loss    {:.4} | val loss {:.4} | val bpb {:.4}",
        s.final_loss, s.val_loss, s.val_bpb
    );
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// SFT's and GRPO's results, from their report.json.
fn tuning(run: &Path) {
    let f64_of = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    if let Some(r) = read_json(&run.join("sft/report.json")) {
        println!(
            "sft           {} steps in {:.1} s | val loss {:.4} (assistant tokens)",
            r["steps"],
            f64_of(&r["wall_s"]),
            f64_of(&r["val_loss"])
        );
        let f = &r["format"];
        if let (Some(ok), Some(n)) = (f["well_formed"].as_u64(), f["prompts"].as_u64()) {
            println!(
                "chat replies  {ok} / {n} held-out prompts answered well-formed ({:.0}%) | decode {:.0} tok/s at batch {}",
                100.0 * ok as f64 / n.max(1) as f64,
                f64_of(&f["decode_tok_s"]),
                f["batch"]
            );
        }
    }
    if let Some(r) = read_json(&run.join("grpo/report.json")) {
        let (b, a) = (&r["before"], &r["after"]);
        println!(
            "grpo          {} steps in {:.1} s | held-out arithmetic {:.1}% -> {:.1}% ({} -> {} of {}) | change {:+.1} ± {:.1} points (paired 95%)",
            r["steps"],
            f64_of(&r["wall_s"]),
            100.0 * f64_of(&b["accuracy"]),
            100.0 * f64_of(&a["accuracy"]),
            b["correct"],
            a["correct"],
            a["n"],
            100.0 * f64_of(&r["change"]),
            100.0 * f64_of(&r["change_ci95"])
        );
    }
    println!("chat          frugal chat --run {}", run.display());
}

fn card_line(results: &[eval::StageResults]) {
    for st in results {
        let get = |name: &str| {
            st.tasks
                .iter()
                .find(|t| t.task == name && t.error.is_none())
                .and_then(|t| Some((t.score?, t.ci95()?, t.n)))
                .map_or("-".to_string(), |(s, ci, n)| {
                    format!("{:.1} ± {:.1}% ({n})", 100.0 * s, 100.0 * ci)
                })
        };
        println!(
            "eval {:<8} HellaSwag {} | ARC-Easy {} | centred mean {} ({} tasks)",
            st.stage,
            get("hellaswag"),
            get("arc_easy"),
            st.centered_mean
                .map_or("-".to_string(), |m| format!("{:.1}", 100.0 * m)),
            st.centered_over.len()
        );
    }
}

/// Three continuations by the pretrained model, each from its own fixed seed, so a rerun
/// (or a resumed run) prints the same three.
fn samples(run: &Path) -> anyhow::Result<Vec<String>> {
    let trained = train::checkpoint::load_trained(run, false)?;
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        ..Default::default()
    };
    let mut out = Vec::new();
    for (seed, prompt) in (1..).zip(SAMPLE_PROMPTS) {
        let mut rng = tensor::Rng::new(seed);
        let text = continue_text(&trained.model, &trained.tok, prompt, 48, params, &mut rng);
        out.push(format!("{seed}. {:?}", text.trim_end()));
    }
    Ok(out)
}

/// Each stage's budget, this command's wall time, and the ledger's (all sessions of the run);
/// the stages without a share of their own (plan, fetch, data, tokenizer, report) share what
/// is left of the budget.
fn stage_table(plan: &SpeedrunPlan, clock: &Clock, ledger: Option<&ledger::Ledger>) -> String {
    let rest_share = 1.0 - SHARES.iter().map(|s| s.1).sum::<f64>();
    let total = clock.total();
    let mut o = String::from("stage        budget    steps   predicted   this command   ledger\n");
    let row = |o: &mut String, name: &str, budget: f64, steps: Option<usize>, pred: Option<f64>| {
        // The ledger bills every preference trainer (rm, dpo, grpo) as "preference".
        let billed = if name == "grpo" { "preference" } else { name };
        let ledger_s = ledger.and_then(|l| l.stage(billed)).map(|t| t.wall_s);
        let wall = clock.of(name);
        o.push_str(&format!(
            "{:<10} {:>8} {:>8} {:>11} {:>14} {:>8}\n",
            name,
            if budget > 0.0 {
                duration(budget)
            } else {
                String::new()
            },
            steps.map_or(String::new(), |n| n.to_string()),
            pred.map_or(String::new(), duration),
            format!(
                "{} ({:.0}%)",
                duration(wall),
                100.0 * wall / total.max(1e-9)
            ),
            ledger_s.map_or("-".into(), duration),
        ));
    };
    for s in ["plan", "fetch", "data", "tokenizer", "tokenize"] {
        row(&mut o, s, 0.0, None, None);
    }
    for s in &plan.stages {
        row(
            &mut o,
            &s.stage,
            s.budget_s,
            s.steps,
            Some(s.predicted_s).filter(|_| s.steps.is_some()),
        );
    }
    o.push_str(&format!(
        "(plan, fetch, data, tokenizer, tokenize and the report share the other {}.)\n",
        duration(rest_share * plan.budget_s)
    ));
    o.push_str(&format!(
        "total      {:>8} {:>8} {:>11} {:>14}\n",
        duration(plan.budget_s),
        "",
        "",
        duration(total)
    ));
    o
}
