//! Every config shipped in configs/ loads and validates with the reader of its stage.

#[test]
fn every_shipped_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("data-") || name.starts_with("scaling-") {
            // Data preparation configs and fitted laws: checked where they are read (the data
            // crate, app::scaling's tests).
            continue;
        }
        if name.starts_with("sft-") {
            stages::sft::SftConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        if name.starts_with("dpo-") {
            stages::pref::dpo::DpoConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        if name.starts_with("rm-") {
            stages::pref::rm::RmConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        if name.starts_with("grpo-") {
            stages::pref::grpo::GrpoConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        if name == "cost.toml" {
            ledger::CostConfig::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        train::Config::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
