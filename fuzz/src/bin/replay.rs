//! Replays every committed input (fuzz/{seeds,corpus,regressions}/TARGET/*) through its
//! target (`bench/fuzz.sh` runs it last; `cargo +nightly fuzz build replay` builds it alone).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (name, f) in frugal_fuzz::TARGETS {
        let mut n = 0;
        for dir in ["seeds", "corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).expect("a committed input is readable");
                f(&data);
                n += 1;
            }
        }
        println!("{name}: {n} inputs replayed");
        total += n;
    }
    println!("replayed {total} inputs, no failure");
}
