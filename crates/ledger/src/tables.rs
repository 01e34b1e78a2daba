//! The numbers the cost model multiplies by: GPU datasheets, and the user's price, power and
//! grid assumptions (`configs/cost.toml`).

use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A GPU's datasheet: dense (no sparsity) tensor-core peaks and board power.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gpu {
    pub name: &'static str,
    pub full_name: &'static str,
    /// Dense BF16 tensor-core peak, TFLOP/s.
    pub bf16_tflops: f64,
    /// Dense FP8 peak, TFLOP/s (0 where the GPU has no FP8 tensor cores).
    pub fp8_tflops: f64,
    /// Board power (TDP), watts.
    pub tdp_w: f64,
}

/// Datasheet values (SXM parts where there is a choice). The H800 is the H100 with its
/// interconnect cut for export, with the same compute.
pub const GPUS: &[Gpu] = &[
    Gpu {
        name: "h100",
        full_name: "NVIDIA H100 SXM 80GB",
        bf16_tflops: 989.4,
        fp8_tflops: 1978.9,
        tdp_w: 700.0,
    },
    Gpu {
        name: "h800",
        full_name: "NVIDIA H800 SXM 80GB",
        bf16_tflops: 989.4,
        fp8_tflops: 1978.9,
        tdp_w: 700.0,
    },
    Gpu {
        name: "h200",
        full_name: "NVIDIA H200 SXM 141GB",
        bf16_tflops: 989.4,
        fp8_tflops: 1978.9,
        tdp_w: 700.0,
    },
    Gpu {
        name: "a100",
        full_name: "NVIDIA A100 SXM 80GB",
        bf16_tflops: 312.0,
        fp8_tflops: 0.0,
        tdp_w: 400.0,
    },
    Gpu {
        name: "b200",
        full_name: "NVIDIA B200",
        bf16_tflops: 2250.0,
        fp8_tflops: 4500.0,
        tdp_w: 1000.0,
    },
    Gpu {
        name: "l4",
        full_name: "NVIDIA L4",
        bf16_tflops: 121.0,
        fp8_tflops: 242.0,
        tdp_w: 72.0,
    },
    Gpu {
        name: "rtx4090",
        full_name: "NVIDIA GeForce RTX 4090",
        bf16_tflops: 165.2,
        fp8_tflops: 330.3,
        tdp_w: 450.0,
    },
    Gpu {
        name: "mi300x",
        full_name: "AMD Instinct MI300X",
        bf16_tflops: 1307.4,
        fp8_tflops: 2614.9,
        tdp_w: 750.0,
    },
];

/// The GPU called `name` (case-insensitive), or an error listing the known names.
pub fn gpu(name: &str) -> Result<&'static Gpu> {
    GPUS.iter()
        .find(|g| g.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = GPUS.iter().map(|g| g.name).collect();
            Error::input(
                format!("GPU {name:?}"),
                "is not in frugal's GPU table",
                format!("use one of: {}", names.join(", ")),
            )
        })
}

/// The built-in assumptions, the same text as configs/cost.toml in the repository.
const DEFAULT_COST_TOML: &str = include_str!("../../../configs/cost.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    pub prices: Prices,
    pub power: Power,
    pub grid: Grid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Dollars per vCPU-hour, charged on wall time × cores held.
    pub cpu_core_hour: f64,
    /// Dollars per GPU-hour by GPU name.
    pub gpu_hour: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Power {
    /// Watts per busy core when no meter is available.
    pub cpu_core_watts: f64,
    /// Fraction of board power a busy GPU draws, when no meter is available.
    pub gpu_load: f64,
    /// Data-centre overhead multiplier (power usage effectiveness), ≥ 1.
    pub pue: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub kg_co2_per_kwh: f64,
}

impl CostConfig {
    /// The built-in assumptions.
    pub fn builtin() -> CostConfig {
        Self::parse(DEFAULT_COST_TOML, "built-in configs/cost.toml")
            .expect("the built-in cost table is valid")
    }

    /// `path` if given; else configs/cost.toml in the working directory if it exists; else
    /// the built-in table.
    pub fn load(path: Option<&Path>) -> Result<CostConfig> {
        let default = Path::new("configs/cost.toml");
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                Self::parse(&text, &p.display().to_string())
            }
            None if default.is_file() => {
                let text = std::fs::read_to_string(default).map_err(|e| Error::io(default, e))?;
                Self::parse(&text, &default.display().to_string())
            }
            None => Ok(Self::builtin()),
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<CostConfig> {
        let c: CostConfig = base::config::parse_toml(text, origin, &[])?;
        c.validate().map_err(|(field, msg)| {
            Error::config(
                origin,
                format!("{field}: {msg}"),
                "fix that value in the cost table",
            )
        })?;
        Ok(c)
    }

    fn validate(&self) -> std::result::Result<(), (String, String)> {
        let finite_non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err((
                    field.to_string(),
                    format!("{v} must be a finite number ≥ 0"),
                ))
            }
        };
        finite_non_negative("prices.cpu_core_hour", self.prices.cpu_core_hour)?;
        for (name, &price) in &self.prices.gpu_hour {
            gpu(name).map_err(|e| (format!("prices.gpu_hour.{name}"), e.to_string()))?;
            finite_non_negative(&format!("prices.gpu_hour.{name}"), price)?;
        }
        finite_non_negative("power.cpu_core_watts", self.power.cpu_core_watts)?;
        finite_non_negative("power.gpu_load", self.power.gpu_load)?;
        if self.power.gpu_load > 1.0 {
            return Err((
                "power.gpu_load".into(),
                format!("{} exceeds 1 (the board power)", self.power.gpu_load),
            ));
        }
        if !(self.power.pue >= 1.0 && self.power.pue.is_finite()) {
            return Err((
                "power.pue".into(),
                format!("{} is below 1: overhead cannot save power", self.power.pue),
            ));
        }
        finite_non_negative("grid.kg_co2_per_kwh", self.grid.kg_co2_per_kwh)?;
        Ok(())
    }

    /// Dollars per hour of one `gpu`, or an error naming the missing price.
    pub fn gpu_hour_price(&self, gpu: &str) -> Result<f64> {
        self.prices.gpu_hour.get(gpu).copied().ok_or_else(|| {
            Error::config(
                "cost table",
                format!("prices.gpu_hour has no price for {gpu}"),
                format!(
                    "add `{gpu} = <dollars per hour>` under [prices.gpu_hour], or pass --price"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_and_the_repository_copy_is_the_same_text() {
        let c = CostConfig::builtin();
        assert!(c.prices.gpu_hour["h800"] == 2.0 && c.power.pue >= 1.0);
        for g in GPUS {
            assert!(
                c.prices.gpu_hour.contains_key(g.name),
                "{} has no price",
                g.name
            );
        }
    }

    #[test]
    fn bad_tables_are_named() {
        let text = DEFAULT_COST_TOML.replace("cpu_core_hour = 0.045", "cpu_core_hour = -1.0");
        let e = CostConfig::parse(&text, "my.toml").unwrap_err().to_string();
        assert!(
            e.contains("my.toml") && e.contains("prices.cpu_core_hour") && e.contains("≥ 0"),
            "{e}"
        );
        let text = DEFAULT_COST_TOML.replace("h100 = 3.00", "h1000 = 3.00");
        let e = CostConfig::parse(&text, "my.toml").unwrap_err().to_string();
        assert!(
            e.contains("prices.gpu_hour.h1000") && e.contains("use one of"),
            "{e}"
        );
        let text = DEFAULT_COST_TOML.replace("pue = 1.0", "pue = 0.5");
        assert!(CostConfig::parse(&text, "x")
            .unwrap_err()
            .to_string()
            .contains("power.pue"));
        let text = DEFAULT_COST_TOML.replace("[grid]\n", "[grid]\nvoltage = 3\n");
        assert!(CostConfig::parse(&text, "x")
            .unwrap_err()
            .to_string()
            .contains("voltage"));
        assert!(gpu("H100").is_ok());
        let e = gpu("tpu-v5").unwrap_err().to_string();
        assert!(e.contains("tpu-v5") && e.contains("h100"), "{e}");
    }
}
