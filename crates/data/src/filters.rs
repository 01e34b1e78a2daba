//! Document quality filters and a word-list toxicity filter, with stable reason names for the
//! removal report.
//!
//! The quality rules are Gopher's (Rae et al. 2021, appendix A): length, mean word length,
//! symbol ratio, bullet/ellipsis lines, alphabetic words, and the repetition rules of its
//! table A1, which remove the index pages, tables and spam loops that dominate bad web text.
//! None depends on the language except the optional stop-word rule.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// Gopher's thresholds (defaults). A document failing any rule is dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Fewer whitespace-separated words than this: too short to teach anything.
    pub min_words: usize,
    /// More words than this (Gopher: 100,000; raise it for corpora of whole books).
    pub max_words: usize,
    /// Mean word length outside [min, max] characters: tables, code dumps, spam.
    pub min_mean_word_len: f64,
    pub max_mean_word_len: f64,
    /// Ratio of `#` and ellipses to words.
    pub max_symbol_ratio: f64,
    /// Fraction of lines starting with a bullet.
    pub max_bullet_lines: f64,
    /// Fraction of lines ending with an ellipsis.
    pub max_ellipsis_lines: f64,
    /// Fraction of words with at least one alphabetic character.
    pub min_alpha_words: f64,
    /// Gopher's English stop-word rule (at least this many of the, be, to, of, and, that, have,
    /// with); off by default to stay language-agnostic.
    pub min_stop_words: Option<usize>,
    /// Fraction of lines that duplicate an earlier line, and of characters in such lines.
    pub max_dup_lines: f64,
    pub max_dup_line_chars: f64,
    /// Fraction of characters in the most frequent 2-, 3- and 4-gram.
    pub max_top_ngram_chars: [f64; 3],
    /// Fraction of characters in duplicated 5- to 10-grams.
    pub max_dup_ngram_chars: [f64; 6],
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            min_words: 50,
            max_words: 100_000,
            min_mean_word_len: 3.0,
            max_mean_word_len: 10.0,
            max_symbol_ratio: 0.1,
            max_bullet_lines: 0.9,
            max_ellipsis_lines: 0.3,
            min_alpha_words: 0.8,
            min_stop_words: None,
            max_dup_lines: 0.30,
            max_dup_line_chars: 0.20,
            max_top_ngram_chars: [0.20, 0.18, 0.16],
            max_dup_ngram_chars: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
        }
    }
}

/// Why a document was removed; `as_str` names appear in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    TooFewWords,
    TooManyWords,
    MeanWordLength,
    SymbolRatio,
    BulletLines,
    EllipsisLines,
    AlphaWords,
    StopWords,
    DupLines,
    DupLineChars,
    TopNgram(usize),
    DupNgram(usize),
    ToxicWords,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::TooFewWords => "too_few_words",
            Reason::TooManyWords => "too_many_words",
            Reason::MeanWordLength => "mean_word_length",
            Reason::SymbolRatio => "symbol_ratio",
            Reason::BulletLines => "bullet_lines",
            Reason::EllipsisLines => "ellipsis_lines",
            Reason::AlphaWords => "alpha_words",
            Reason::StopWords => "stop_words",
            Reason::DupLines => "dup_lines",
            Reason::DupLineChars => "dup_line_chars",
            Reason::TopNgram(n) => ["top_2gram", "top_3gram", "top_4gram"][(n - 2).min(2)],
            Reason::DupNgram(n) => [
                "dup_5gram",
                "dup_6gram",
                "dup_7gram",
                "dup_8gram",
                "dup_9gram",
                "dup_10gram",
            ][(n - 5).min(5)],
            Reason::ToxicWords => "toxic_words",
        }
    }
}

fn fx(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

/// Applies every rule of `cfg`, cheapest first.
pub fn check_quality(text: &str, cfg: &QualityConfig) -> Result<(), Reason> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    if n < cfg.min_words {
        return Err(Reason::TooFewWords);
    }
    if n > cfg.max_words {
        return Err(Reason::TooManyWords);
    }
    let chars: Vec<usize> = words.iter().map(|w| w.chars().count()).collect();
    let total_chars: usize = chars.iter().sum();
    let mean = total_chars as f64 / n as f64;
    if mean < cfg.min_mean_word_len || mean > cfg.max_mean_word_len {
        return Err(Reason::MeanWordLength);
    }
    let symbols =
        text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
    if symbols as f64 / n as f64 > cfg.max_symbol_ratio {
        return Err(Reason::SymbolRatio);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let nl = lines.len().max(1) as f64;
    let bullets = lines
        .iter()
        .filter(|l| l.starts_with(['•', '-', '*', '●', '▪', '‣', '◦']))
        .count();
    if bullets as f64 / nl > cfg.max_bullet_lines {
        return Err(Reason::BulletLines);
    }
    let ellipses = lines
        .iter()
        .filter(|l| l.ends_with("...") || l.ends_with('…'))
        .count();
    if ellipses as f64 / nl > cfg.max_ellipsis_lines {
        return Err(Reason::EllipsisLines);
    }
    let alpha = words
        .iter()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    if (alpha as f64) < cfg.min_alpha_words * n as f64 {
        return Err(Reason::AlphaWords);
    }
    if let Some(min) = cfg.min_stop_words {
        const STOP: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];
        let found = words
            .iter()
            .filter(|w| STOP.contains(&w.to_lowercase().as_str()))
            .count();
        if found < min {
            return Err(Reason::StopWords);
        }
    }
    // Repetition: duplicate lines.
    let mut seen = HashSet::with_capacity(lines.len());
    let (mut dup_lines, mut dup_line_chars) = (0usize, 0usize);
    let line_chars: usize = lines.iter().map(|l| l.chars().count()).sum();
    for l in &lines {
        if !seen.insert(fx(l)) {
            dup_lines += 1;
            dup_line_chars += l.chars().count();
        }
    }
    if dup_lines as f64 / nl > cfg.max_dup_lines {
        return Err(Reason::DupLines);
    }
    if dup_line_chars as f64 > cfg.max_dup_line_chars * line_chars.max(1) as f64 {
        return Err(Reason::DupLineChars);
    }
    // Repetition: n-grams of words, hashed incrementally.
    let word_hash: Vec<u64> = words.iter().map(|w| fx(w)).collect();
    let ngram = |i: usize, len: usize| {
        word_hash[i..i + len].iter().fold(len as u64, |h, &w| {
            (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
        })
    };
    for (k, len) in (2..=4).enumerate() {
        if n < len {
            break;
        }
        let mut counts: FxHashMap<u64, (usize, usize)> = FxHashMap::default();
        for i in 0..=n - len {
            let e = counts.entry(ngram(i, len)).or_insert((0, i));
            e.0 += 1;
        }
        if let Some(&(count, first)) = counts
            .values()
            .max_by_key(|&&(c, first)| (c, std::cmp::Reverse(first)))
        {
            let gram_chars: usize = chars[first..first + len].iter().sum();
            if count > 1
                && (count * gram_chars) as f64 > cfg.max_top_ngram_chars[k] * total_chars as f64
            {
                return Err(Reason::TopNgram(len));
            }
        }
    }
    for (k, len) in (5..=10).enumerate() {
        if n < len {
            break;
        }
        let mut first_at: FxHashMap<u64, usize> = FxHashMap::default();
        let mut covered = vec![false; n];
        for i in 0..=n - len {
            let h = ngram(i, len);
            match first_at.get(&h) {
                Some(&j) => {
                    covered[i..i + len].iter_mut().for_each(|c| *c = true);
                    covered[j..j + len].iter_mut().for_each(|c| *c = true);
                }
                None => {
                    first_at.insert(h, i);
                }
            }
        }
        let dup_chars: usize = covered
            .iter()
            .zip(&chars)
            .filter(|(c, _)| **c)
            .map(|(_, &l)| l)
            .sum();
        if dup_chars as f64 > cfg.max_dup_ngram_chars[k] * total_chars as f64 {
            return Err(Reason::DupNgram(len));
        }
    }
    Ok(())
}

/// Drops documents dense in words from a list (lower-case, matched as whole words after
/// stripping surrounding punctuation): at least `min_count` hits that are also at least
/// `min_fraction` of the words. Both conditions, so that a novel with a few oaths survives and
/// a page built of them does not.
#[derive(Clone, Debug)]
pub struct Toxicity {
    words: HashSet<String>,
    pub min_count: usize,
    pub min_fraction: f64,
}

/// A short list of words offensive in nearly every context — words with innocent senses that
/// books use (bastard, whore, cock, dick, chink, retard) are left out on purpose: the first run
/// on the default corpus flagged Shakespeare and the Brown corpus for them. Users supply their
/// own list with `word_list` in the prepare config.
const BUILTIN: &[&str] = &[
    "fuck",
    "fucking",
    "fucked",
    "fucker",
    "fuckers",
    "motherfucker",
    "shit",
    "shitty",
    "bullshit",
    "cunt",
    "cunts",
    "cocksucker",
    "dickhead",
    "asshole",
    "assholes",
    "wanker",
    "twat",
    "nigger",
    "niggers",
    "faggot",
    "faggots",
    "kike",
    "porn",
    "porno",
];

impl Toxicity {
    pub fn builtin() -> Self {
        Self::from_words(BUILTIN.iter().map(|s| s.to_string()))
    }

    pub fn from_words(words: impl IntoIterator<Item = String>) -> Self {
        Toxicity {
            words: words.into_iter().map(|w| w.to_lowercase()).collect(),
            min_count: 3,
            min_fraction: 0.001,
        }
    }

    /// One word per line; blank lines and `#` comments ignored.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let words = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string);
        Ok(Self::from_words(words))
    }

    pub fn check(&self, text: &str) -> Result<(), Reason> {
        let mut total = 0usize;
        let mut hits = 0usize;
        for w in text.split_whitespace() {
            total += 1;
            let core = w.trim_matches(|c: char| !c.is_alphanumeric());
            if !core.is_empty() && self.words.contains(&core.to_lowercase()) {
                hits += 1;
            }
        }
        if hits >= self.min_count && hits as f64 >= self.min_fraction * total as f64 {
            Err(Reason::ToxicWords)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible paragraph of `n` distinct-enough words.
    fn prose(n: usize) -> String {
        let vocab = [
            "the", "river", "ran", "quietly", "through", "a", "valley", "where", "farmers", "grew",
            "barley", "and", "apples", "while", "children", "played", "near", "old", "stone",
            "bridges", "during", "long", "summer", "evenings", "under", "bright", "stars",
        ];
        let mut s = String::new();
        let mut x = 12345u64;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(vocab[(x % vocab.len() as u64) as usize]);
            s.push(if i % 12 == 11 { '\n' } else { ' ' });
        }
        s
    }

    #[test]
    fn defaults_are_gophers() {
        let c = QualityConfig::default();
        assert_eq!(
            (
                c.min_words,
                c.max_words,
                c.max_symbol_ratio,
                c.max_dup_lines,
                c.max_dup_line_chars
            ),
            (50, 100_000, 0.1, 0.3, 0.2)
        );
        assert_eq!(c.max_top_ngram_chars, [0.20, 0.18, 0.16]);
        assert_eq!(c.max_dup_ngram_chars, [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]);
    }

    #[test]
    fn each_rule_passes_good_text_and_catches_bad() {
        let c = QualityConfig::default();
        let good = prose(400);
        assert_eq!(check_quality(&good, &c), Ok(()));
        let cases: Vec<(String, Reason)> = vec![
            (prose(20), Reason::TooFewWords),
            (prose(200), Reason::TooManyWords),
            ("a b c d e f g h i j ".repeat(10), Reason::MeanWordLength),
            (format!("{} {}", good, "# ".repeat(60)), Reason::SymbolRatio),
            (
                prose(300).lines().map(|l| format!("- {l}\n")).collect(),
                Reason::BulletLines,
            ),
            (
                prose(300).lines().map(|l| format!("{l}...\n")).collect(),
                Reason::EllipsisLines,
            ),
            (
                format!("{good} {}", "1234 5678 ".repeat(100)),
                Reason::AlphaWords,
            ),
            (
                format!("{good}{}", "the same line repeated here again\n".repeat(40)),
                Reason::DupLines,
            ),
            (
                format!("{good} {}", "barley apples ".repeat(200)),
                Reason::TopNgram(2),
            ),
        ];
        for (text, want) in cases {
            let cfg = if want == Reason::TooManyWords {
                QualityConfig {
                    max_words: 100,
                    ..c.clone()
                }
            } else {
                c.clone()
            };
            assert_eq!(check_quality(&text, &cfg), Err(want), "{}", want.as_str());
        }
        // A long repeated passage (not a single repeated n-gram) trips the duplicate 5-gram rule.
        let passage = prose(60).replace('\n', " ");
        let text = format!("{good} {passage} {passage}");
        assert!(
            matches!(
                check_quality(&text, &c),
                Err(Reason::DupNgram(_)) | Err(Reason::DupLineChars)
            ),
            "{:?}",
            check_quality(&text, &c)
        );
        let stop = QualityConfig {
            min_stop_words: Some(2),
            ..c.clone()
        };
        assert_eq!(
            check_quality(&"lorem ipsum dolor sit amet ".repeat(20), &stop),
            Err(Reason::StopWords)
        );
    }

    #[test]
    fn toxicity_needs_density_not_a_single_oath() {
        let t = Toxicity::builtin();
        let novel = format!(
            "{} \"Damn it, shit!\" he said. {}",
            prose(3000),
            prose(3000)
        );
        assert_eq!(t.check(&novel), Ok(()));
        let rant = format!(
            "{} SHIT, fuck... fucking bullshit! {}",
            prose(100),
            "shit ".repeat(5)
        );
        assert_eq!(
            t.check(&"The bastard son of the king. ".repeat(50)),
            Ok(()),
            "literature's words are not on the list"
        );
        assert_eq!(t.check(&rant), Err(Reason::ToxicWords));
        let custom = Toxicity::from_words(["zonk".to_string()]);
        assert_eq!(custom.check("zonk zonk zonk"), Err(Reason::ToxicWords));
    }
}
