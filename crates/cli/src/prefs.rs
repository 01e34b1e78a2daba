//! `frugal prefs`: the preference store outside the page — annotators and their tokens,
//! importing preference datasets, exporting judged pairs, progress and agreement.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use store::{Stats, Store};

#[derive(Subcommand)]
pub enum PrefsCommand {
    /// Add or list annotators (each gets a token for the annotation page).
    #[command(subcommand)]
    Annotator(AnnotatorCommand),
    /// Import preference pairs: HH-RLHF JSONL (also .gz), BIG-bench hhh_alignment task.json,
    /// or frugal's JSONL {prompt, chosen, rejected, annotator}. A second import adds nothing.
    Import(ImportArgs),
    /// Export every preferred-over judgement as JSONL {prompt, chosen, rejected, annotator}
    /// (what `frugal pref dpo` and `frugal pref rm` read). Ties and both-harmful are counted.
    Export(ExportArgs),
    /// Progress and inter-annotator agreement (raw, Cohen's kappa per pair, Fleiss' kappa).
    Stats(StatsArgs),
}

#[derive(Subcommand)]
pub enum AnnotatorCommand {
    /// Add an annotator and print their token and link (the token is shown only now).
    Add {
        name: String,
        /// Give an existing annotator a new token; the old one stops working.
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// List annotators and their vote counts.
    List {
        #[command(flatten)]
        db: DbArg,
    },
}

/// Where the store is.
#[derive(Args)]
pub struct DbArg {
    /// The preference store (default: RUN/prefs.sqlite, or runs/speedrun/prefs.sqlite).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Run directory whose prefs.sqlite to use.
    #[arg(long, conflicts_with = "db")]
    run: Option<PathBuf>,
}

impl DbArg {
    fn path(&self) -> PathBuf {
        match (&self.db, &self.run) {
            (Some(db), _) => db.clone(),
            (None, Some(run)) => run.join("prefs.sqlite"),
            (None, None) => PathBuf::from("runs/speedrun/prefs.sqlite"),
        }
    }

    /// Opens the store, creating it when `create`; otherwise it must exist.
    fn open(&self, create: bool) -> anyhow::Result<Store> {
        let path = self.path();
        anyhow::ensure!(
            create || path.exists(),
            "no preference store at {}\nHINT: pass --db or --run; `frugal annotate` and `frugal prefs import` create one",
            path.display()
        );
        Ok(Store::open(&path)?)
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// Files to import, e.g. data/raw/hh-rlhf/harmless-base-test.jsonl.gz
    /// data/raw/bigbench/hhh_alignment/harmless/task.json
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Output JSONL file.
    #[arg(long)]
    out: PathBuf,
    /// Whose judgements: `page` (the annotation page's people), `datasets` (imports, named
    /// `dataset:NAME`) or `all`.
    #[arg(long, default_value = "all", value_parser = ["all", "page", "datasets"])]
    source: String,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print the statistics as JSON (what GET /api/stats serves).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(cmd: PrefsCommand) -> anyhow::Result<()> {
    match cmd {
        PrefsCommand::Annotator(AnnotatorCommand::Add { name, rotate, db }) => {
            let mut store = db.open(true)?;
            let token = if rotate {
                store.rotate_token(&name)?
            } else {
                store.add_annotator(&name)?
            };
            println!("annotator {name}: token {token}");
            println!("link (with `frugal annotate --port P`): http://127.0.0.1:P/?token={token}");
            println!("the token is not stored and cannot be shown again; --rotate makes a new one");
            Ok(())
        }
        PrefsCommand::Annotator(AnnotatorCommand::List { db }) => {
            let store = db.open(false)?;
            println!("{:<24} {:>8}  kind", "annotator", "votes");
            for a in store.annotators()? {
                let kind = if a.has_token { "person" } else { "dataset" };
                println!("{:<24} {:>8}  {kind}", a.name, a.votes);
            }
            Ok(())
        }
        PrefsCommand::Import(a) => import(a),
        PrefsCommand::Export(a) => export(a),
        PrefsCommand::Stats(a) => {
            let stats = a.db.open(false)?.stats()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", stats_text(&stats));
            }
            Ok(())
        }
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let mut store = a.db.open(true)?;
    for file in &a.files {
        let read = data::pairs::read_pairs(file)?;
        let source = file.display().to_string();
        let r = store.import(&read, &source)?;
        let mut line = format!(
            "{source}: {} pairs | {} items and {} votes added | {} already there",
            r.pairs, r.items_added, r.votes_added, r.duplicates
        );
        if r.conflicts > 0 {
            line += &format!(
                " | {} contradict a stored judgement by the same annotator (kept as stored)",
                r.conflicts
            );
        }
        if r.identical > 0 {
            line += &format!(" | {} with two identical replies left out", r.identical);
        }
        if read.skipped > 0 {
            line += &format!(
                " | {} rows skipped (first: {})",
                read.skipped,
                read.first_skip.as_deref().unwrap_or("")
            );
        }
        println!("{line}");
    }
    println!("store {}", store.path().display());
    Ok(())
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let store = a.db.open(false)?;
    let source = match a.source.as_str() {
        "page" => store::Source::Page,
        "datasets" => store::Source::Datasets,
        _ => store::Source::All,
    };
    let ex = store.export_from(source)?;
    let mut text = String::new();
    for p in &ex.pairs {
        text += &data::pairs::to_json(p).to_string();
        text.push('\n');
    }
    write_atomic(&a.out, text.as_bytes())?;
    let mut line = format!(
        "wrote {} pairs to {} | from {} votes; not pairs: {} ties, {} both harmful",
        ex.pairs.len(),
        a.out.display(),
        ex.votes,
        ex.ties,
        ex.both_harmful
    );
    if ex.identical > 0 {
        line += &format!(", {} identical replies", ex.identical);
    }
    println!("{line}");
    Ok(())
}

/// Writes next to `path`, fsyncs, then renames: a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--out {} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn num(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.3}"))
}

pub fn stats_text(s: &Stats) -> String {
    let mut out = format!(
        "items {} | judged {} | by two or more {} | votes {}\n",
        s.items, s.items_voted, s.items_double, s.votes
    );
    if s.imported_items > 0 {
        out += &format!(
            "imported: {} items, {} votes\n",
            s.imported_items, s.imported_votes
        );
    }
    out += &format!("{:<24} {:>8}  kind\n", "annotator", "votes");
    for a in &s.annotators {
        let kind = if a.has_token { "person" } else { "dataset" };
        out += &format!("{:<24} {:>8}  {kind}\n", a.name, a.votes);
    }
    let g = &s.agreement;
    out += &format!(
        "agreement on {} items judged twice or more: raw {} | Fleiss' kappa {}\n",
        g.items,
        num(g.raw),
        num(g.fleiss_kappa)
    );
    for p in &g.pairs {
        out += &format!(
            "  {} · {}: {} items | agreement {} | Cohen's kappa {}\n",
            p.a,
            p.b,
            p.items,
            num(Some(p.agreement)),
            num(p.kappa)
        );
    }
    out
}
