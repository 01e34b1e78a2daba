//! Who started this process, and as which rank: read from the variables each launcher sets.
//! Open MPI's mpirun (OMPI_COMM_WORLD_*), MPICH/Hydra and Intel MPI (PMI_*), torchrun
//! (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and Slurm's srun (SLURM_*).

use base::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// Started by hand: one process.
    None,
    OpenMpi,
    Pmi,
    Torchrun,
    Slurm,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::None => "no launcher",
            Launcher::OpenMpi => "mpirun (Open MPI)",
            Launcher::Pmi => "a PMI launcher (mpiexec)",
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "srun (Slurm)",
        }
    }

    /// Launchers whose processes can call MPI_Init.
    pub fn speaks_mpi(self) -> bool {
        matches!(self, Launcher::OpenMpi | Launcher::Pmi | Launcher::Slurm)
    }
}

/// This process's place among the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world: usize,
    /// Rank among the processes on this machine (picks the GPU; shares the cores).
    pub local_rank: usize,
    pub local_world: usize,
}

impl Launch {
    pub const SOLO: Launch = Launch {
        launcher: Launcher::None,
        rank: 0,
        world: 1,
        local_rank: 0,
        local_world: 1,
    };

    /// From this process's environment.
    pub fn detect() -> Result<Launch> {
        Self::from_env(|k| std::env::var(k).ok())
    }

    /// From the variables `get` returns. The most specific launcher wins: mpirun and torchrun
    /// may themselves run under srun, and then their own variables are the truth.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let schemes: [(Launcher, [&str; 4]); 4] = [
            (
                Launcher::OpenMpi,
                [
                    "OMPI_COMM_WORLD_RANK",
                    "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_LOCAL_RANK",
                    "OMPI_COMM_WORLD_LOCAL_SIZE",
                ],
            ),
            (
                Launcher::Pmi,
                ["PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"],
            ),
            (
                Launcher::Torchrun,
                ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"],
            ),
            (
                Launcher::Slurm,
                [
                    "SLURM_PROCID",
                    "SLURM_NTASKS",
                    "SLURM_LOCALID",
                    "SLURM_NTASKS_PER_NODE",
                ],
            ),
        ];
        for (launcher, [rank, world, local, local_world]) in schemes {
            let (Some(r), Some(w)) = (get(rank), get(world)) else {
                continue;
            };
            let number = |var: &str, text: &str| -> Result<usize> {
                // Slurm writes per-node counts as "2(x3)": two tasks on each of three nodes.
                let head = text.split(['(', ',']).next().unwrap_or(text).trim();
                head.parse().map_err(|_| {
                    Error::config(
                        format!("environment variable {var}"),
                        format!("{text:?} is not a number"),
                        format!("check how {} was started", launcher.name()),
                    )
                })
            };
            let (rank_n, world_n) = (number(rank, &r)?, number(world, &w)?);
            let local_n = match get(local) {
                Some(v) => number(local, &v)?,
                None => rank_n,
            };
            // Slurm sets SLURM_NTASKS_PER_NODE only when asked for; SLURM_TASKS_PER_NODE always.
            let local_world_var = match launcher {
                Launcher::Slurm if get(local_world).is_none() => "SLURM_TASKS_PER_NODE",
                _ => local_world,
            };
            let local_world_n = match get(local_world_var) {
                Some(v) => number(local_world_var, &v)?,
                None => world_n,
            };
            if world_n == 0 || rank_n >= world_n || local_n >= local_world_n.max(1) {
                return Err(Error::config(
                    format!("environment of {}", launcher.name()),
                    format!(
                        "{rank}={rank_n}, {world}={world_n}, {local}={local_n}: the rank is outside the world"
                    ),
                    "start the ranks with the launcher, not by setting these variables by hand",
                ));
            }
            return Ok(Launch {
                launcher,
                rank: rank_n,
                world: world_n,
                local_rank: local_n,
                local_world: local_world_n.max(1),
            });
        }
        Ok(Launch::SOLO)
    }

    /// Worker threads for this rank when none are asked for: the machine's cores shared among
    /// the ranks on it.
    pub fn default_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.local_world).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn each_launcher_is_recognised() {
        let solo = Launch::from_env(env(&[])).unwrap();
        assert_eq!(solo, Launch::SOLO);
        let ompi = Launch::from_env(env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            // srun around mpirun: Open MPI's own variables win.
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!(
            (ompi.launcher, ompi.rank, ompi.world, ompi.local_rank),
            (Launcher::OpenMpi, 1, 4, 1)
        );
        let torch = Launch::from_env(env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "3"),
            ("LOCAL_WORLD_SIZE", "4"),
        ]))
        .unwrap();
        assert_eq!(
            (torch.launcher, torch.rank, torch.local_world),
            (Launcher::Torchrun, 3, 4)
        );
        let slurm = Launch::from_env(env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_LOCALID", "2"),
            ("SLURM_NTASKS_PER_NODE", "3(x2)"),
        ]))
        .unwrap();
        assert_eq!(
            (slurm.launcher, slurm.rank, slurm.world, slurm.local_world),
            (Launcher::Slurm, 5, 6, 3)
        );
        assert!(slurm.launcher.speaks_mpi() && !torch.launcher.speaks_mpi());
        let slurm = Launch::from_env(env(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_TASKS_PER_NODE", "4(x2)"),
        ]))
        .unwrap();
        assert_eq!(slurm.local_world, 4);
        let pmi = Launch::from_env(env(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")])).unwrap();
        assert_eq!((pmi.launcher, pmi.local_world), (Launcher::Pmi, 2));
    }

    #[test]
    fn a_garbled_environment_is_refused_with_the_variable() {
        let e = Launch::from_env(env(&[("RANK", "two"), ("WORLD_SIZE", "4")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK") && e.contains("\"two\""), "{e}");
        let e = Launch::from_env(env(&[("RANK", "4"), ("WORLD_SIZE", "4")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the world"), "{e}");
    }
}
