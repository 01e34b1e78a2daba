//! The data plan a fresh clone follows: every source `scripts/fetch-data.sh` knows comes from a
//! package registry (through the tool's default index) or from `vendor/` in this repository,
//! never from a folder beside the clone or an address in the script; every `data/raw/<source>`
//! a config reads is one of those sources; and the vendored sources install offline, byte for
//! byte what was published.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (name, kind, package) of each entry of the script's SOURCES table.
fn sources() -> Vec<(String, String, String)> {
    let script = std::fs::read_to_string(repo().join("scripts/fetch-data.sh")).unwrap();
    let table = script
        .split_once("SOURCES=(")
        .and_then(|(_, rest)| rest.split_once("\n)"))
        .expect("fetch-data.sh has a SOURCES=( ... ) table")
        .0;
    table
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix('"'))
        .map(|entry| {
            let f: Vec<&str> = entry.split('|').collect();
            assert_eq!(f.len(), 6, "name|group|kind|package|size|licence: {entry}");
            (f[0].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

#[test]
fn every_source_comes_from_a_registry_or_the_repository() {
    let all = sources();
    assert!(all.len() >= 10, "{all:?}");
    for (name, kind, package) in &all {
        match kind.as_str() {
            "npm" | "pip" | "deb" => {}
            "vendor" => {
                let dir = repo().join(package);
                assert!(
                    package.starts_with("vendor/") && dir.join("LICENSE").is_file(),
                    "{name}: a vendored source is a folder under vendor/ with its LICENSE"
                );
                let readme = std::fs::read_to_string(repo().join("vendor/README.md")).unwrap();
                assert!(
                    readme.contains(&format!("`{name}/`")),
                    "vendor/README.md describes {name}"
                );
            }
            other => panic!("{name} comes from {other:?}: only npm, pip, deb or vendor"),
        }
    }
    // No address and no other index: the registries are reached through each tool's default.
    let script = std::fs::read_to_string(repo().join("scripts/fetch-data.sh")).unwrap();
    for needle in [
        "://",
        "--index-url",
        "--extra-index-url",
        "--registry",
        "Dir::Etc",
        "../shared",
    ] {
        assert!(
            !script.contains(needle),
            "fetch-data.sh mentions {needle:?}"
        );
    }
}

#[test]
fn every_raw_path_a_config_reads_is_a_known_source() {
    let names: Vec<String> = sources().into_iter().map(|s| s.0).collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (_, rest) in text
            .match_indices("data/raw/")
            .map(|(i, _)| text.split_at(i + 9))
        {
            let source: String = rest
                .chars()
                .take_while(|c| !matches!(c, '/' | '"'))
                .collect();
            assert!(
                names.contains(&source),
                "{} reads data/raw/{source}, which fetch-data.sh does not provide",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} data/raw paths found in configs/"
    );
}

#[test]
fn vendored_sources_install_offline_as_published() {
    let data = std::env::temp_dir().join(format!("frugal-fetch-plan-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(repo().join("scripts/fetch-data.sh"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--source",
            "gsm8k,hh-rlhf",
        ])
        .env("PATH", "/usr/bin:/bin") // no npm or pip needed
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = data.join("raw");
    let sha = |p: &str| format!("{:x}", Sha256::digest(std::fs::read(raw.join(p)).unwrap()));
    let lines = |p: &str| {
        std::fs::read_to_string(raw.join(p))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        sha("gsm8k/train.jsonl"),
        "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"
    );
    assert_eq!(
        sha("gsm8k/test.jsonl"),
        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    );
    assert_eq!(
        sha("hh-rlhf/harmless-base-test.jsonl.gz"),
        "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03"
    );
    assert_eq!(
        (lines("gsm8k/train.jsonl"), lines("gsm8k/test.jsonl")),
        (7473, 1319)
    );
    for s in ["gsm8k", "hh-rlhf"] {
        assert!(raw.join(s).join(".complete").is_file() && raw.join(s).join("LICENSE").is_file());
    }
    std::fs::remove_dir_all(&data).ok();
}
