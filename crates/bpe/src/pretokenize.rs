//! Pre-splitting text into pieces that BPE merges never cross (words, numbers, punctuation runs,
//! whitespace), as GPT-2/GPT-4 tokenizers do.
//!
//! The default GPT-4 pattern runs through a hand-written matcher: it is the hot loop of both
//! training and encoding, and a backtracking regex (the pattern needs a lookahead) spends most
//! of its time re-scanning. The matcher is checked piece-for-piece against `fancy-regex` on the
//! same pattern in the tests. Any other pattern runs through `fancy-regex`.

use std::sync::OnceLock;

/// The GPT-4 (cl100k-style) split pattern, as used by minbpe and nanochat.
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
/// The GPT-2 split pattern.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// A compiled pre-split pattern.
#[derive(Clone, Debug)]
pub enum Splitter {
    /// `GPT4_PATTERN`, matched by hand.
    Gpt4,
    /// Any other pattern. Boxed: a compiled regex is large.
    Regex(Box<fancy_regex::Regex>, String),
}

impl Splitter {
    /// `pattern` is a regex in fancy-regex syntax; `GPT4_PATTERN` selects the fast matcher.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern == GPT4_PATTERN {
            return Ok(Splitter::Gpt4);
        }
        let re = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| format!("invalid split pattern {pattern:?}: {e}"))?;
        Ok(Splitter::Regex(Box::new(re), pattern.to_string()))
    }

    pub fn pattern(&self) -> &str {
        match self {
            Splitter::Gpt4 => GPT4_PATTERN,
            Splitter::Regex(_, p) => p,
        }
    }

    /// Calls `emit` with each piece of `text`, in order. The pieces always concatenate back to
    /// `text`: text a user's pattern does not match becomes a piece of its own (as Hugging
    /// Face's `Split` pre-tokenizer keeps it), so encoding never drops input.
    pub fn split<'a>(&self, text: &'a str, mut emit: impl FnMut(&'a str)) {
        match self {
            Splitter::Gpt4 => gpt4_split(text, emit),
            Splitter::Regex(re, _) => regex_split(re, text, &mut emit),
        }
    }
}

/// Backtracking steps one search of a user's pattern may take (fancy-regex counts them per
/// search). Patterns without look-around or back-references run on the linear-time `regex`
/// engine and never reach it; a pathological one hits it and leaves the rest of the text as one
/// piece, which the linear-time encoder then takes.
pub const BACKTRACK_LIMIT: usize = 100_000;

fn regex_split<'a>(re: &fancy_regex::Regex, text: &'a str, emit: &mut impl FnMut(&'a str)) {
    let mut done = 0;
    for m in re.find_iter(text) {
        let Ok(m) = m else {
            break; // backtrack limit: the rest stays whole, below
        };
        if m.start() > done {
            emit(&text[done..m.start()]);
        }
        if m.end() > m.start() {
            emit(m.as_str());
        }
        done = m.end();
    }
    if done < text.len() {
        emit(&text[done..]);
    }
}

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;

/// Character classes of the Basic Multilingual Plane, plus sorted ranges beyond it, built once
/// from the same Unicode tables the regex engine uses (regex-syntax), so both agree exactly.
struct Classes {
    bmp: Vec<u8>,
    astral: Vec<(u32, u32, u8)>,
}

fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut bmp = vec![0u8; 0x10000];
        let mut astral = Vec::new();
        for (class, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            let hir = regex_syntax::parse(class).expect("built-in class parses");
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) =
                hir.kind()
            else {
                unreachable!("{class} is a Unicode class")
            };
            for r in cls.ranges() {
                let (lo, hi) = (r.start() as u32, r.end() as u32);
                for c in lo..=hi.min(0xFFFF) {
                    bmp[c as usize] |= bit;
                }
                if hi > 0xFFFF {
                    astral.push((lo.max(0x10000), hi, bit));
                }
            }
        }
        astral.sort_unstable();
        Classes { bmp, astral }
    })
}

#[inline]
fn class_of(c: char) -> u8 {
    let cp = c as u32;
    let t = classes();
    if cp < 0x10000 {
        t.bmp[cp as usize]
    } else {
        t.astral
            .iter()
            .filter(|&&(lo, hi, _)| lo <= cp && cp <= hi)
            .fold(0, |acc, &(_, _, bit)| acc | bit)
    }
}

/// The char starting at byte `i` of `s` (which must be a char boundary), and its class.
#[inline]
fn at(s: &str, i: usize) -> Option<(char, u8)> {
    let b = *s.as_bytes().get(i)?;
    if b < 0x80 {
        let c = b as char;
        return Some((c, ASCII[b as usize]));
    }
    let c = s[i..].chars().next()?;
    Some((c, class_of(c)))
}

static ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            NUMBER
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C) {
            SPACE
        } else {
            0
        };
        i += 1;
    }
    t
};

/// End of the run of chars from `i` whose class has `bit`, at most `max` chars.
#[inline]
fn run_end(s: &str, mut i: usize, pred: impl Fn(char, u8) -> bool, max: usize) -> usize {
    let mut count = 0;
    while count < max {
        match at(s, i) {
            Some((c, k)) if pred(c, k) => {
                i += c.len_utf8();
                count += 1;
            }
            _ => break,
        }
    }
    i
}

/// Length in bytes of a contraction after an apostrophe at `i - 1`: (?i:[sdmt]|ll|ve|re).
#[inline]
fn contraction(s: &str, i: usize) -> Option<usize> {
    let rest = &s.as_bytes()[i..];
    let lower = |k: usize| rest.get(k).map(|b| b.to_ascii_lowercase());
    match lower(0) {
        Some(b's' | b'd' | b'm' | b't') => return Some(1),
        // 'ſ' (long s) case-folds to 's' under (?i).
        _ if s[i..].starts_with('ſ') => return Some('ſ'.len_utf8()),
        _ => {}
    }
    match (lower(0), lower(1)) {
        (Some(b'l'), Some(b'l')) | (Some(b'v'), Some(b'e')) | (Some(b'r'), Some(b'e')) => Some(2),
        _ => None,
    }
}

/// GPT4_PATTERN by hand. Each branch mirrors one alternative, tried in order.
fn gpt4_split<'a>(s: &'a str, mut emit: impl FnMut(&'a str)) {
    let is_letter = |_: char, k: u8| k & LETTER != 0;
    let is_number = |_: char, k: u8| k & NUMBER != 0;
    let is_space = |_: char, k: u8| k & SPACE != 0;
    let is_punct = |_: char, k: u8| k & (LETTER | NUMBER | SPACE) == 0;
    let n = s.len();
    let mut i = 0;
    while let Some((c, k)) = at(s, i) {
        let next = i + c.len_utf8();
        let end = 'm: {
            // '(?i:[sdmt]|ll|ve|re)
            if c == '\'' {
                if let Some(len) = contraction(s, next) {
                    break 'm next + len;
                }
            }
            // [^\r\n\p{L}\p{N}]?+\p{L}+
            if k & LETTER != 0 {
                break 'm run_end(s, next, is_letter, usize::MAX);
            }
            if k & (NUMBER) == 0 && c != '\r' && c != '\n' {
                if let Some((_, k2)) = at(s, next) {
                    if k2 & LETTER != 0 {
                        break 'm run_end(s, next, is_letter, usize::MAX);
                    }
                }
            }
            // \p{N}{1,3}
            if k & NUMBER != 0 {
                break 'm run_end(s, next, is_number, 2);
            }
            // ' ?[^\s\p{L}\p{N}]++[\r\n]*'
            let start = if c == ' ' { next } else { i };
            let punct_end = run_end(s, start, is_punct, usize::MAX);
            if punct_end > start {
                break 'm run_end(s, punct_end, |c, _| c == '\r' || c == '\n', usize::MAX);
            }
            // Remaining alternatives all start with whitespace.
            debug_assert!(
                k & SPACE != 0,
                "every char is a letter, number, space or other"
            );
            let ws_end = run_end(s, i, is_space, usize::MAX);
            // \s*[\r\n]: up to the last line break in the whitespace run.
            if let Some(last_nl) = s[i..ws_end].rfind(['\r', '\n']) {
                break 'm i + last_nl + 1;
            }
            // \s+(?!\S): the run, minus its last char unless it ends the text.
            if ws_end == n {
                break 'm ws_end;
            }
            let last = s[i..ws_end].chars().next_back().map_or(0, char::len_utf8);
            if ws_end - last > i {
                break 'm ws_end - last;
            }
            // \s+
            ws_end
        };
        emit(&s[i..end]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(sp: &Splitter, text: &str) -> Vec<String> {
        let mut out = vec![];
        sp.split(text, |p| out.push(p.to_string()));
        out
    }

    fn regex_pieces(text: &str) -> Vec<String> {
        static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
        let re = RE.get_or_init(|| fancy_regex::Regex::new(GPT4_PATTERN).unwrap());
        re.find_iter(text)
            .map(|m| m.unwrap().as_str().to_string())
            .collect()
    }

    #[test]
    fn hand_matcher_equals_the_regex() {
        let samples = [
            "Hello world! It's 2024, isn't it? I'LL say 'hello' & we've 12345 apples.",
            "  leading spaces\n\n\ttabs\r\n  trailing   ",
            "emoji 😀👍 and CJK 漢字かな, Ελληνικά, русский, عربى, हिन्दी",
            "numbers ①②③ Ⅻ ١٢٣٤ x²³ 3.14159 1,000,000",
            "(parens) [brackets] {braces} --dashes-- ...ellipsis... \"quotes\"",
            "'ſ 'S 'Ll 'VE 're 'x ' '",
            "a\u{00A0}b\u{2003}c\u{3000}d \u{85}e",
            "line\r\nbreak\n \n  \n",
            "",
            " ",
            "\n",
            "x   ",
            "!!!\n\n",
            "café naïve coöperate ﬁ ǅ",
        ];
        let sp = Splitter::new(GPT4_PATTERN).unwrap();
        assert!(matches!(sp, Splitter::Gpt4));
        for text in samples {
            assert_eq!(pieces(&sp, text), regex_pieces(text), "on {text:?}");
        }
    }

    #[test]
    fn hand_matcher_equals_the_regex_on_random_text() {
        // Characters chosen to hit every class boundary of the pattern.
        let alphabet: Vec<char> =
            "aZ9 \t\n\r'sSlLvVeErRdDmMtT.,!?-_\"(ſ😀漢é①Ⅻ\u{A0}\u{2003}\u{85}١"
                .chars()
                .collect();
        let sp = Splitter::Gpt4;
        let mut state = 0x2545F4914F6CDD1Du64;
        for _ in 0..3000 {
            let len = (state % 24) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(pieces(&sp, &text), regex_pieces(&text), "on {text:?}");
        }
    }

    #[test]
    fn other_patterns_use_the_regex_engine() {
        let sp = Splitter::new(GPT2_PATTERN).unwrap();
        assert_eq!(
            pieces(&sp, "Hello  world's"),
            vec!["Hello", " ", " world", "'s"]
        );
        assert!(Splitter::new("(unclosed").is_err());
    }

    #[test]
    fn text_a_pattern_skips_stays_in_the_pieces() {
        let sp = Splitter::new(r"\p{L}+").unwrap();
        assert_eq!(pieces(&sp, "ab, cd!"), vec!["ab", ", ", "cd", "!"]);
        // A pattern that also matches the empty string emits no empty pieces.
        let sp = Splitter::new(r"\d*").unwrap();
        assert_eq!(pieces(&sp, "a12b"), vec!["a", "12", "b"]);
    }

    #[test]
    fn a_pattern_past_its_backtrack_limit_keeps_the_rest_once() {
        // Catastrophic backtracking: nested quantifiers under a lookahead that never holds.
        let sp = Splitter::new(r"x|(a|aa)+(?=b)").unwrap();
        let text = format!("xx{}", "a".repeat(64));
        let got = pieces(&sp, &text);
        assert_eq!(got.concat(), text, "every byte once, none repeated");
        assert_eq!(got, vec!["x", "x", &"a".repeat(64)]);
    }
}
