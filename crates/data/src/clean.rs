//! Text normalisation and boilerplate removal, applied before any filter so that filters judge
//! the text a model would actually see.

use unicode_normalization::UnicodeNormalization;

/// NFC; `\r\n` and `\r` → `\n`; control characters other than `\n` and `\t` removed, with the
/// byte-order mark and zero-width spaces; trailing whitespace of each line stripped; at most one
/// blank line in a row (paragraph breaks survive, page-layout gaps do not); trimmed.
/// Idempotent.
pub fn normalize(text: &str) -> String {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let kept: String = unified
        .nfc()
        .filter(|&c| {
            c == '\n' || c == '\t' || !(c.is_control() || c == '\u{FEFF}' || c == '\u{200B}')
        })
        .collect();
    let mut out = String::with_capacity(kept.len());
    let mut blank_run = 0;
    for line in kept.split('\n') {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

/// The body of a Project Gutenberg e-text, without the header before the `*** START OF …`
/// line and the licence after the `*** END OF …` line (old and new marker wordings), or None
/// when the text has no start marker.
pub fn strip_gutenberg(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    const STARTS: &[&str] = &[
        "*** start of this project gutenberg",
        "*** start of the project gutenberg",
        "***start of the project gutenberg",
        "*end*the small print!",
    ];
    const ENDS: &[&str] = &[
        "*** end of this project gutenberg",
        "*** end of the project gutenberg",
        "***end of the project gutenberg",
        "end of the project gutenberg ebook",
        "end of project gutenberg's",
        "end of this project gutenberg",
    ];
    let start_marker = STARTS.iter().filter_map(|m| lower.find(m)).min()?;
    // The body starts on the line after the marker line.
    let body_start = lower[start_marker..]
        .find('\n')
        .map_or(text.len(), |n| start_marker + n + 1);
    let body_end = ENDS
        .iter()
        .filter_map(|m| lower[body_start..].find(m).map(|p| body_start + p))
        .min()
        .map_or(text.len(), |p| lower[..p].rfind('\n').map_or(p, |n| n + 1));
    text.get(body_start..body_end.max(body_start))
}

/// Short lines that are page chrome rather than content (FineWeb-style line filters).
const BOILERPLATE: &[&str] = &[
    "cookie",
    "privacy policy",
    "terms of use",
    "terms of service",
    "all rights reserved",
    "enable javascript",
    "javascript is disabled",
    "share on facebook",
    "share on twitter",
    "click here",
    "sign up",
    "log in",
    "subscribe to our newsletter",
    "unsubscribe",
];

/// Drops boilerplate lines — short (under 10 words) lines naming page chrome, and lines with
/// no letters or digits (rules, separators) — keeping paragraph structure. Returns the kept text
/// and the number of lines removed.
pub fn strip_boilerplate_lines(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let lower = t.to_lowercase();
        let chrome =
            t.split_whitespace().count() < 10 && BOILERPLATE.iter().any(|b| lower.contains(b));
        let symbols_only =
            !t.is_empty() && t.chars().count() > 3 && !t.chars().any(char::is_alphanumeric);
        if chrome || symbols_only {
            removed += 1;
            continue;
        }
        out.push_str(line);
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_idempotent_and_does_what_it_says() {
        let samples = [
            "  Cafe\u{301} \r\nline two   \r\rthree\u{0007}\u{FEFF}\n\n\n\n\nfour\u{200B}\t tab\n",
            "",
            "\n\n\n",
            "a\n\nb\n\n\nc",
            "ﬁ ligature stays (NFC, not NFKC) Å",
        ];
        for s in samples {
            let n = normalize(s);
            assert_eq!(normalize(&n), n, "idempotent on {s:?}");
            assert!(!n.contains('\r') && !n.contains("\n\n\n"), "{n:?}");
        }
        assert_eq!(
            normalize(samples[0]),
            "Café\nline two\n\nthree\n\nfour\t tab"
        );
        assert!(normalize(samples[4]).contains('ﬁ'));
    }

    #[test]
    fn gutenberg_header_and_licence_are_stripped() {
        let book = "The Project Gutenberg EBook of Emma\nLicence blah\n*** START OF THIS PROJECT GUTENBERG EBOOK EMMA ***\n\nEMMA\nChapter I\n\n*** END OF THIS PROJECT GUTENBERG EBOOK EMMA ***\nMore licence.\n";
        assert_eq!(strip_gutenberg(book), Some("\nEMMA\nChapter I\n\n"));
        let old = "header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nBody.\nEnd of the Project Gutenberg EBook of X\n";
        assert_eq!(strip_gutenberg(old), Some("Body.\n"));
        assert_eq!(strip_gutenberg("no markers here"), None);
        assert_eq!(
            strip_gutenberg("*** START OF THE PROJECT GUTENBERG EBOOK X ***"),
            Some("")
        );
    }

    #[test]
    fn boilerplate_lines_go_content_stays() {
        let page = "Accept all cookies\nThe committee met on Tuesday to discuss the budget.\n----------\nPrivacy Policy | Terms of Use\nA long sentence that mentions a cookie recipe in passing and keeps going for many words.\n";
        let (kept, removed) = strip_boilerplate_lines(page);
        assert_eq!(removed, 3);
        assert_eq!(kept, "The committee met on Tuesday to discuss the budget.\nA long sentence that mentions a cookie recipe in passing and keeps going for many words.\n");
    }
}
