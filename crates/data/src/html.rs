//! HTML → main text, for web-crawl records. A small extractor in the spirit of trafilatura:
//! keep `<article>`/`<main>` when the page has one, drop scripts, styles and page chrome
//! (nav, header, footer, aside, forms), turn block elements into line breaks, strip the other
//! tags and decode entities. Written here because the extraction rules are few and a full HTML5
//! parser would be the largest dependency of the pipeline.

/// Elements whose whole content is dropped.
const DROP: &[&str] = &[
    "script", "style", "noscript", "head", "nav", "header", "footer", "aside", "form", "svg",
    "iframe", "template",
];
/// Elements that break lines.
const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "table",
    "section",
    "article",
    "main",
    "blockquote",
    "pre",
    "hr",
    "dd",
    "dt",
    "title",
    "body",
];

/// The readable text of an HTML document, one paragraph per line.
pub fn html_to_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let body = ["article", "main"]
        .iter()
        .find_map(|tag| {
            let start = lower.find(&format!("<{tag}"))?;
            let end = lower[start..]
                .find(&format!("</{tag}>"))
                .map_or(html.len(), |e| start + e);
            Some(&html[start..end])
        })
        .unwrap_or(html);
    let stripped = strip_tags(body);
    let mut out = String::with_capacity(stripped.len());
    for line in stripped.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.is_empty() {
            out.push_str(&words.join(" "));
            out.push('\n');
        }
    }
    out
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let Some(rel) = html[i..].find('<') else {
            out.push_str(&decode_entities(&html[i..]));
            break;
        };
        out.push_str(&decode_entities(&html[i..i + rel]));
        let tag_start = i + rel;
        if lower[tag_start..].starts_with("<!--") {
            i = lower[tag_start..]
                .find("-->")
                .map_or(html.len(), |e| tag_start + e + 3);
            continue;
        }
        let Some(close) = html[tag_start..].find('>') else {
            break;
        };
        let tag_end = tag_start + close + 1;
        let inner = &lower[tag_start + 1..tag_end - 1];
        let name: String = inner
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        i = tag_end;
        if !inner.starts_with('/') && !inner.ends_with('/') && DROP.contains(&name.as_str()) {
            // Skip to the matching close tag (these elements do not nest in practice).
            i = lower[tag_end..]
                .find(&format!("</{name}"))
                .map_or(html.len(), |e| {
                    let close_at = tag_end + e;
                    lower[close_at..]
                        .find('>')
                        .map_or(html.len(), |g| close_at + g + 1)
                });
            continue;
        }
        if BLOCK.contains(&name.as_str()) {
            out.push('\n');
        }
    }
    out
}

/// Bytes after an `&` searched for the `;` that ends an entity: the longest name decoded
/// (`#x10FFFF`, `hellip`) fits, and the search stays linear in the text however many `&`
/// it holds (searching to the end of the text for each was quadratic).
const ENTITY_WINDOW: usize = 11;

#[cfg(test)]
thread_local! {
    /// Bytes examined for entity names, by which a test checks that decoding is linear.
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Decodes the named entities common on the web and all numeric ones.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let window = &rest.as_bytes()[1..rest.len().min(1 + ENTITY_WINDOW)];
        #[cfg(test)]
        SCANNED.with(|c| c.set(c.get() + window.len()));
        let decoded = window.iter().position(|&b| b == b';').and_then(|semi| {
            let name = &rest[1..1 + semi];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                "hellip" => Some('…'),
                "lsquo" => Some('‘'),
                "rsquo" => Some('’'),
                "ldquo" => Some('“'),
                "rdquo" => Some('”'),
                "copy" => Some('©'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, semi + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_storms_decode_in_linear_work() {
        for n in [10_000, 100_000, 400_000] {
            let storm = format!("<p>{}x;</p>", "&".repeat(n));
            SCANNED.with(|c| c.set(0));
            let text = decode_entities(&storm);
            assert_eq!(text, storm, "no entity in a storm of bare ampersands");
            let scanned = SCANNED.with(|c| c.get());
            assert!(
                scanned <= ENTITY_WINDOW * n,
                "{scanned} bytes examined for {n} ampersands"
            );
        }
        assert_eq!(
            decode_entities("&amp;&#x10FFFF;&hellip;&#39;"),
            "&\u{10FFFF}…'"
        );
    }

    #[test]
    fn extracts_the_article_text() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>
            <script>var x = "<p>not text</p>";</script></head><body>
            <nav><a href="/">Home</a> | <a href="/about">About</a></nav>
            <article><h1>Big   news</h1><p>First paragraph &amp; more&nbsp;text.</p>
            <!-- a comment --><p>Second<br>line &#8212; &#x41;&lt;b&gt;</p></article>
            <footer>© 2024 Example. All rights reserved.</footer></body></html>"#;
        assert_eq!(
            html_to_text(html),
            "Big news\nFirst paragraph & more text.\nSecond\nline — A<b>\n"
        );
    }

    #[test]
    fn pages_without_article_keep_body_and_broken_markup_does_not_panic() {
        assert_eq!(
            html_to_text("<div>One</div><div>Two &unknown; & three</div>"),
            "One\nTwo &unknown; & three\n"
        );
        for broken in [
            "<p>unclosed",
            "<",
            "text <script>never closed",
            "&#xFFFFFFFF; &#;",
            "<article>x",
        ] {
            let _ = html_to_text(broken);
        }
    }
}
