//! What the served pages share: a Content-Security-Policy that admits only the page's own
//! inline script and style (by hash), so even a slip from `textContent` to `innerHTML` could
//! not run text that came from a model or a user.

use sha2::{Digest, Sha256};

/// Standard base64 with padding (for CSP hashes; not worth a dependency).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The text between `open` and the next `close` in the page (its one script or style).
fn inline<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page.find(open).expect("the page has the element") + open.len();
    let len = page[start..].find(close).expect("the element is closed");
    &page[start..start + len]
}

pub fn content_security_policy(page: &str) -> String {
    let hash = |s: &str| format!("'sha256-{}'", base64(&Sha256::digest(s.as_bytes())));
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash(inline(page, "<script>", "</script>")),
        hash(inline(page, "<style>", "</style>")),
    )
}

/// The checks every page passes: one script and one style, no HTML built from strings, no
/// outside resources, and a policy without `unsafe`.
#[cfg(test)]
pub fn assert_safe(page: &str) {
    assert_eq!(page.matches("<script").count(), 1);
    assert_eq!(page.matches("<style").count(), 1);
    for bad in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!page.contains(bad), "the page uses {bad}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no outside resources"
    );
    let csp = content_security_policy(page);
    assert!(
        csp.contains("script-src 'sha256-") && !csp.contains("unsafe"),
        "{csp}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        // RFC 4648 section 10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
