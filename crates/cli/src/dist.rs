//! `frugal dist check`.

use clap::{Args, Subcommand};
use train::config::{Backend, DistConfig};
use train::dist::Launch;

#[derive(Subcommand)]
pub enum DistCommand {
    /// Run every collective with known values on each rank, then measure all-reduce
    /// bandwidth; e.g. `mpirun -np 2 frugal dist check`.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// auto (MPI under mpirun/srun, NCCL under torchrun), solo, mpi or nccl.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Seconds a collective may wait for the other ranks.
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
}

pub fn run(cmd: DistCommand, launch: &Launch) -> anyhow::Result<()> {
    let DistCommand::Check(a) = cmd;
    let backend = match a.backend.as_str() {
        "auto" => Backend::Auto,
        "solo" => Backend::Solo,
        "mpi" => Backend::Mpi,
        "nccl" => Backend::Nccl,
        other => anyhow::bail!("--backend {other:?} is not auto, solo, mpi or nccl"),
    };
    let cfg = DistConfig {
        backend,
        timeout_s: a.timeout_s,
        ..DistConfig::default()
    };
    let comm = train::dist::connect(&cfg, launch)?;
    match train::dist::check(&*comm) {
        Ok(lines) if comm.rank() == 0 => lines.iter().for_each(|l| println!("{l}")),
        Ok(_) => {}
        Err(e) if comm.world() > 1 => {
            eprintln!("error: {e:#}");
            comm.abort(1)
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
