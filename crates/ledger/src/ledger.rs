//! The per-run ledger, `ledger.json`: what each stage really spent. Every invocation of a stage
//! is a segment with its measured wall time, CPU time, tokens, FLOPs and (where the machine has
//! a meter) energy; a segment is rewritten before each checkpoint and every 30 seconds, so work
//! lost to a crash is still on the bill. Dollars, energy estimates and CO2 are derived from the segments and the cost
//! table, and the table used is stored beside them.
//!
//! Stages that write outside the run directory (data preparation, the tokenizer, tokenizing)
//! keep a ledger next to their output; the stages that consume that output copy its segments
//! in, marked with where they came from, so a run's ledger covers the whole recipe.

use crate::tables::CostConfig;
use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const FILE: &str = "ledger.json";

/// Stages in recipe order (the order of the summary).
pub const STAGES: &[&str] = &[
    "data",
    "tokenizer",
    "tokenize",
    "pretrain",
    "sft",
    "preference",
    "eval",
];

/// One invocation of one stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub stage: String,
    /// Unix milliseconds at the start, the process id and a counter: unique per invocation.
    pub session: String,
    pub started_unix: f64,
    pub wall_s: f64,
    /// User + system CPU seconds of the process.
    pub cpu_s: f64,
    /// Cores held (worker threads): what a rented machine charges for.
    pub threads: usize,
    /// Tokens trained on, evaluated or generated (0 for text-only stages).
    pub tokens: u64,
    /// Model FLOPs of the training tokens, PaLM convention (MFU's numerator).
    pub model_flops: f64,
    /// Every matrix-product FLOP the kernels performed: training, evaluation, sampling.
    pub kernel_flops: f64,
    /// The machine's measured f32 GEMM peak during this segment, GFLOP/s (0: not measured).
    pub peak_gflops: f64,
    /// Energy from a hardware meter (RAPL), joules; absent when estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    /// False while the stage runs, or if it was killed after this was written.
    pub complete: bool,
    /// A few words on the work: "4,210 documents, 61.3 MB", "800 steps".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The ledger this segment was copied from, for stages done outside the run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<String>,
}

/// A stage's segments summed and priced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTotal {
    pub stage: String,
    pub sessions: usize,
    pub complete: bool,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub core_hours: f64,
    pub tokens: u64,
    pub model_flops: f64,
    pub kernel_flops: f64,
    /// model FLOPs / (wall time × measured peak × ... ), null without FLOPs or a peak.
    pub mfu: Option<f64>,
    pub energy_kwh: f64,
    /// True when every segment's energy came from a meter.
    pub energy_measured: bool,
    pub dollars: f64,
    pub kg_co2: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub version: u32,
    /// The machine: CPU model name and how energy is known.
    pub device: String,
    pub energy_source: String,
    pub segments: Vec<Segment>,
    /// Derived: the segments summed per stage, with the table below.
    pub stages: Vec<StageTotal>,
    pub total: StageTotal,
    pub assumptions: CostConfig,
}

impl Ledger {
    fn new(cost: CostConfig) -> Ledger {
        Ledger {
            version: 1,
            device: cpu_name(),
            energy_source: match Rapl::open(Path::new(RAPL_ROOT)) {
                Some(_) => "measured: RAPL package counters".into(),
                None => {
                    "estimated: busy core-seconds x power.cpu_core_watts (no RAPL meter readable)"
                        .into()
                }
            },
            segments: Vec::new(),
            stages: Vec::new(),
            total: StageTotal::default(),
            assumptions: cost,
        }
    }

    /// Reads `dir/ledger.json`; Ok(None) if there is none.
    pub fn read(dir: &Path) -> Result<Option<Ledger>> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("is not a frugal ledger: {e}"),
                "move it aside; the next stage starts a new one",
            )
        })
    }

    /// Recomputes the per-stage totals with `cost`.
    pub fn price(&mut self, cost: &CostConfig) {
        self.assumptions = cost.clone();
        let mut stages: Vec<StageTotal> = Vec::new();
        let mut order: Vec<&str> = STAGES.to_vec();
        for s in &self.segments {
            if !order.contains(&s.stage.as_str()) {
                order.push(&s.stage);
            }
        }
        for name in order {
            let segs: Vec<&Segment> = self.segments.iter().filter(|s| s.stage == name).collect();
            if !segs.is_empty() {
                stages.push(total_of(name, &segs, cost));
            }
        }
        let all: Vec<&Segment> = self.segments.iter().collect();
        self.total = total_of("total", &all, cost);
        self.total.complete = stages.iter().all(|s| s.complete);
        self.total.detail.clear();
        self.total.inherited_from = None;
        self.stages = stages;
    }

    /// Stages of the recipe before the last one recorded that have no entry: their outputs
    /// were made before frugal kept ledgers, or elsewhere. Their cost is unknown, not zero.
    pub fn missing(&self) -> Vec<&'static str> {
        let last = STAGES
            .iter()
            .rposition(|s| self.stage(s).is_some())
            .unwrap_or(0);
        STAGES[..last]
            .iter()
            .copied()
            .filter(|s| self.stage(s).is_none() && !["preference", "eval"].contains(s))
            .collect()
    }

    pub fn stage(&self, name: &str) -> Option<&StageTotal> {
        self.stages.iter().find(|s| s.stage == name)
    }

    fn write(&mut self, dir: &Path) -> Result<()> {
        let cost = self.assumptions.clone();
        self.price(&cost);
        let text = serde_json::to_string_pretty(self).expect("a ledger serialises");
        base::fs::write_atomic(&dir.join(FILE), text.as_bytes())
    }

    /// One screen: a row per stage and the total.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        o.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>10} {:>10} {:>5} {:>9} {:>9} {:>9}\n",
            "stage", "wall", "CPU-s", "tokens", "FLOPs", "MFU", "Wh", "dollars", "g CO2e"
        ));
        for s in self.stages.iter().chain(std::iter::once(&self.total)) {
            let name = if s.complete || s.stage == "total" {
                s.stage.clone()
            } else {
                format!("{}*", s.stage)
            };
            o.push_str(&format!(
                "{:<10} {:>9} {:>9.0} {:>10} {:>10} {:>5} {:>9.2} {:>9.4} {:>9.2}\n",
                name,
                duration(s.wall_s),
                s.cpu_s,
                count(s.tokens),
                if s.kernel_flops > 0.0 {
                    format!("{:.2e}", s.kernel_flops)
                } else {
                    "-".into()
                },
                s.mfu.map_or("-".into(), |m| format!("{:.0}%", 100.0 * m)),
                1e3 * s.energy_kwh,
                s.dollars,
                1e3 * s.kg_co2
            ));
        }
        let c = &self.assumptions;
        o.push_str(&format!(
            "device {}; energy {}\nprices ${}/core-hour; PUE {}; grid {} kg CO2e/kWh",
            self.device,
            self.energy_source,
            c.prices.cpu_core_hour,
            c.power.pue,
            c.grid.kg_co2_per_kwh
        ));
        let missing = self.missing();
        if !missing.is_empty() {
            o.push_str(&format!(
                "\nnot in the ledger: {} (made before ledgers were kept, or elsewhere): cost unknown, not zero",
                missing.join(", ")
            ));
        }
        if self.stages.iter().any(|s| !s.complete) {
            o.push_str(
                "\n* unfinished: the stage is running or was stopped; its spend so far is counted",
            );
        }
        o
    }
}

/// "1.23e+24", "45.6M", "$5.58M": figures of very different sizes, readably.
pub fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e15 || (a > 0.0 && a < 1e-2) {
        format!("{x:.3e}")
    } else if a >= 1e12 {
        format!("{:.2}T", x / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.2}")
    }
}

/// A token count: "-" for none, exact below ten thousand, else "13.37M".
pub fn count(n: u64) -> String {
    match n {
        0 => "-".into(),
        1..10_000 => n.to_string(),
        _ => si(n as f64),
    }
}

/// "12.3 s", "4m05s", "2h10m", "3.4 days", "2.1 years".
pub fn duration(s: f64) -> String {
    const DAY: f64 = 86_400.0;
    if s >= 365.0 * DAY {
        format!("{:.1} years", s / 365.0 / DAY)
    } else if s >= 2.0 * DAY {
        format!("{:.1} days", s / DAY)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

fn total_of(name: &str, segs: &[&Segment], cost: &CostConfig) -> StageTotal {
    let mut t = StageTotal {
        stage: name.to_string(),
        sessions: segs.len(),
        complete: segs.iter().any(|s| s.complete),
        energy_measured: segs.iter().all(|s| s.energy_j.is_some()),
        inherited_from: segs.iter().find_map(|s| s.inherited_from.clone()),
        ..StageTotal::default()
    };
    let (mut peak_time, mut mfu_time) = (0.0, 0.0);
    for s in segs {
        t.wall_s += s.wall_s;
        t.cpu_s += s.cpu_s;
        t.core_hours += s.wall_s * s.threads as f64 / 3600.0;
        t.tokens += s.tokens;
        t.model_flops += s.model_flops;
        t.kernel_flops += s.kernel_flops;
        let joules = s.energy_j.unwrap_or(s.cpu_s * cost.power.cpu_core_watts);
        t.energy_kwh += joules * cost.power.pue / 3.6e6;
        if s.peak_gflops > 0.0 && s.model_flops > 0.0 {
            peak_time += s.wall_s * s.peak_gflops * 1e9;
            mfu_time += s.model_flops;
        }
        if !s.detail.is_empty() {
            t.detail = s.detail.clone();
        }
    }
    t.mfu = (peak_time > 0.0).then(|| mfu_time / peak_time);
    t.dollars = t.core_hours * cost.prices.cpu_core_hour;
    t.kg_co2 = t.energy_kwh * cost.grid.kg_co2_per_kwh;
    t
}

fn cpu_name() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{name}, {cores} cores")
}

/// User + system CPU seconds of this process.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one plain struct that we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

const RAPL_ROOT: &str = "/sys/class/powercap";

/// The package-level RAPL energy counters (`intel-rapl:N`, also used by AMD's driver).
pub struct Rapl {
    zones: Vec<(PathBuf, u64)>,
}

impl Rapl {
    /// The readable package zones under `root`, or None.
    pub fn open(root: &Path) -> Option<Rapl> {
        let mut zones = Vec::new();
        for e in std::fs::read_dir(root).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // Package zones only: sub-zones (intel-rapl:0:0, cores, dram) are inside them.
            if name.starts_with("intel-rapl:") && name.matches(':').count() == 1 {
                let range = std::fs::read_to_string(e.path().join("max_energy_range_uj"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                zones.push((e.path().join("energy_uj"), range));
            }
        }
        zones.sort();
        let r = Rapl { zones };
        (!r.zones.is_empty() && r.read().is_some()).then_some(r)
    }

    /// Current counter values, microjoules.
    pub fn read(&self) -> Option<Vec<u64>> {
        self.zones
            .iter()
            .map(|(p, _)| std::fs::read_to_string(p).ok()?.trim().parse().ok())
            .collect()
    }

    /// Joules between two readings, allowing each counter one wrap-around.
    pub fn joules(&self, from: &[u64], to: &[u64]) -> f64 {
        self.zones
            .iter()
            .zip(from.iter().zip(to))
            .map(|((_, range), (&a, &b))| {
                let d = if b >= a { b - a } else { range - a + b };
                d as f64 / 1e6
            })
            .sum()
    }
}

/// Meters started by this process: part of the session id, so two invocations never share one.
static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Measures one invocation of a stage and keeps its segment in `dir/ledger.json` up to date.
pub struct Meter {
    dir: PathBuf,
    /// Dollars per wall-clock hour of this invocation (cores held x price), for progress lines.
    dollars_per_hour: f64,
    seg: Segment,
    t0: Instant,
    last_save: std::cell::Cell<Instant>,
    cpu0: f64,
    flops0: u64,
    rapl: Option<(Rapl, Vec<u64>)>,
    /// Ranks billed (see `ranks`).
    world: usize,
}

impl Meter {
    /// Starts metering `stage`, writing into `dir` (created if missing). `peak_gflops` is the
    /// machine's measured GEMM peak for stages that compute (None for text stages).
    pub fn start(dir: &Path, stage: &str, peak_gflops: Option<f64>) -> Result<Meter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let rapl = Rapl::open(Path::new(RAPL_ROOT)).and_then(|r| {
            let v = r.read()?;
            Some((r, v))
        });
        let cost = match Ledger::read(dir)? {
            Some(l) => l.assumptions,
            None => CostConfig::load(None)?,
        };
        let m = Meter {
            dir: dir.to_path_buf(),
            dollars_per_hour: rayon::current_num_threads() as f64 * cost.prices.cpu_core_hour,
            seg: Segment {
                stage: stage.to_string(),
                session: format!(
                    "{:.0}-{}-{}",
                    now * 1e3,
                    std::process::id(),
                    SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
                started_unix: now,
                wall_s: 0.0,
                cpu_s: 0.0,
                threads: rayon::current_num_threads(),
                tokens: 0,
                model_flops: 0.0,
                kernel_flops: 0.0,
                peak_gflops: peak_gflops.unwrap_or(0.0),
                energy_j: None,
                complete: false,
                detail: String::new(),
                inherited_from: None,
            },
            t0: Instant::now(),
            last_save: std::cell::Cell::new(Instant::now()),
            cpu0: cpu_seconds(),
            flops0: tensor::flops::total(),
            rapl,
            world: 1,
        };
        // Fail now, not after an hour of work, if the ledger is unreadable or unwritable.
        m.save()?;
        Ok(m)
    }

    /// `start` for a stage whose inputs came from `upstream` directories: their ledgers'
    /// entries are copied into `dir`'s first, so the bill follows the data.
    pub fn start_after(
        dir: &Path,
        stage: &str,
        peak_gflops: Option<f64>,
        upstream: &[&Path],
    ) -> Result<Meter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for from in upstream {
            inherit(dir, from)?;
        }
        Self::start(dir, stage, peak_gflops)
    }

    /// Bills `world` ranks like this one (data parallelism: each holds as many cores and runs
    /// the same kernels); the rank that meters counts its own CPU time and kernel FLOPs times
    /// `world`.
    pub fn ranks(mut self, world: usize) -> Meter {
        self.world = world.max(1);
        self.seg.threads *= self.world;
        self.dollars_per_hour *= self.world as f64;
        self
    }

    /// Counts `tokens` processed, of which the model FLOPs are `model_flops`.
    pub fn add(&mut self, tokens: u64, model_flops: f64) {
        self.seg.tokens += tokens;
        self.seg.model_flops += model_flops;
    }

    /// Dollars this invocation has cost so far, at the ledger's price.
    pub fn dollars(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() / 3600.0 * self.dollars_per_hour
    }

    pub fn detail(&mut self, text: impl Into<String>) {
        self.seg.detail = text.into();
    }

    fn measured(&self) -> Segment {
        let mut s = self.seg.clone();
        s.wall_s = self.t0.elapsed().as_secs_f64();
        s.cpu_s = (cpu_seconds() - self.cpu0) * self.world as f64;
        s.kernel_flops = (tensor::flops::total() - self.flops0) as f64 * self.world as f64;
        s.energy_j = self
            .rapl
            .as_ref()
            .and_then(|(r, v0)| Some(r.joules(v0, &r.read()?)));
        s
    }

    /// Writes the spend so far (call before each checkpoint).
    pub fn save(&self) -> Result<()> {
        self.last_save.set(Instant::now());
        self.write(self.measured())
    }

    /// Writes the spend so far if the last write is `seconds` old: a kill between
    /// checkpoints then leaves at most that much work off the bill.
    pub fn save_every(&self, seconds: f64) -> Result<()> {
        if self.last_save.get().elapsed().as_secs_f64() >= seconds {
            self.save()?;
        }
        Ok(())
    }

    fn write(&self, seg: Segment) -> Result<()> {
        let mut ledger = match Ledger::read(&self.dir)? {
            Some(l) => l,
            None => Ledger::new(CostConfig::load(None)?),
        };
        match ledger
            .segments
            .iter_mut()
            .find(|s| s.session == seg.session && s.stage == seg.stage)
        {
            Some(s) => *s = seg,
            None => ledger.segments.push(seg),
        }
        ledger.write(&self.dir)
    }

    /// Marks the stage complete and writes it; returns the stage's totals over all sessions.
    pub fn finish(self) -> Result<StageTotal> {
        let mut seg = self.measured();
        seg.complete = true;
        let stage = seg.stage.clone();
        self.write(seg)?;
        let ledger = Ledger::read(&self.dir)?.expect("just written");
        Ok(ledger.stage(&stage).cloned().expect("just written"))
    }
}

/// The directory whose ledger bills the stage that writes `file`: the file's own.
pub fn dir_of(file: &Path) -> PathBuf {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Copies into `dir`'s ledger the segments of `from`'s ledger for stages `dir` lacks, marked
/// as inherited. A missing `from` ledger is not an error: the stage was done before frugal
/// kept ledgers, and the summary shows it absent rather than free.
pub fn inherit(dir: &Path, from: &Path) -> Result<()> {
    let Some(src) = Ledger::read(from)? else {
        return Ok(());
    };
    let mut ledger = match Ledger::read(dir)? {
        Some(l) => l,
        None => Ledger::new(CostConfig::load(None)?),
    };
    let have: Vec<String> = ledger.segments.iter().map(|s| s.stage.clone()).collect();
    let mut added = false;
    for mut s in src.segments {
        if !have.contains(&s.stage) {
            s.inherited_from
                .get_or_insert_with(|| from.join(FILE).display().to_string());
            ledger.segments.push(s);
            added = true;
        }
    }
    if added {
        ledger.write(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_kept_through_checkpoints_resumes_and_inheritance() {
        let tmp = std::env::temp_dir().join(format!("frugal-ledger-{}", std::process::id()));
        let (data, run) = (tmp.join("data"), tmp.join("run"));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut m = Meter::start(&data, "data", None).unwrap();
        m.detail("3 documents");
        m.finish().unwrap();

        let mut m = Meter::start(&run, "pretrain", Some(100.0)).unwrap();
        inherit(&run, &data).unwrap();
        m.add(1000, 6e9);
        m.save().unwrap();
        // Killed here: the segment is on the bill, unfinished.
        let l = Ledger::read(&run).unwrap().unwrap();
        let p = l.stage("pretrain").unwrap();
        assert!(!p.complete && p.tokens == 1000 && p.sessions == 1);
        assert!(l
            .stage("data")
            .unwrap()
            .inherited_from
            .as_deref()
            .unwrap()
            .contains("data"));
        assert!(l.summary().contains("pretrain*"), "{}", l.summary());
        drop(m);
        // The resumed invocation is a second session of the same stage.
        let mut m = Meter::start(&run, "pretrain", Some(100.0)).unwrap();
        m.add(500, 3e9);
        let t = m.finish().unwrap();
        assert!(t.complete && t.sessions == 2 && t.tokens == 1500 && t.model_flops == 9e9);
        assert!(t.dollars > 0.0 && t.energy_kwh >= 0.0);
        let l = Ledger::read(&run).unwrap().unwrap();
        assert_eq!(
            l.stages
                .iter()
                .map(|s| s.stage.as_str())
                .collect::<Vec<_>>(),
            ["data", "pretrain"]
        );
        assert_eq!(l.total.tokens, 1500);
        // Inheriting again adds nothing twice.
        inherit(&run, &data).unwrap();
        assert_eq!(Ledger::read(&run).unwrap().unwrap().segments.len(), 3);
        // The tokenizer and tokenize stages never ran here: named as unknown, not free.
        assert_eq!(l.missing(), ["tokenizer", "tokenize"]);
        assert!(l
            .summary()
            .contains("not in the ledger: tokenizer, tokenize"));

        std::fs::write(run.join(FILE), "{not json").unwrap();
        let e = Meter::start(&run, "sft", None).err().unwrap().to_string();
        assert!(
            e.contains("ledger.json") && e.contains("not a frugal ledger"),
            "{e}"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn rapl_counters_are_read_and_wrap_around() {
        let root = std::env::temp_dir().join(format!("frugal-rapl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (zone, uj) in [
            ("intel-rapl:0", "900"),
            ("intel-rapl:0:0", "5"),
            ("intel-rapl:1", "50"),
        ] {
            std::fs::create_dir_all(root.join(zone)).unwrap();
            std::fs::write(root.join(zone).join("energy_uj"), uj).unwrap();
            std::fs::write(root.join(zone).join("max_energy_range_uj"), "1000").unwrap();
        }
        let r = Rapl::open(&root).unwrap();
        let a = r.read().unwrap();
        assert_eq!(a, [900, 50]);
        // Zone 0 wrapped past 1000 µJ to 100: 200 µJ; zone 1 went up 1,000,000 µJ... capped by
        // its range, so use a small step: 50 -> 80.
        let joules = r.joules(&a, &[100, 80]);
        assert!((joules - 230e-6).abs() < 1e-12, "{joules}");
        assert!(Rapl::open(&root.join("missing")).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
