//! Reply tokens to text as they are made: the terminal chat and the server's streamed answers
//! write what this returns, so a streamed reply reads exactly like the whole one. A UTF-8
//! character split across tokens is held back until it is complete; calculator calls read as
//! `[calc: 48/2 = 24]`, as [`super::Message::display`] shows them.

use super::ChatFormat;

pub struct TextStream<'a> {
    f: &'a ChatFormat<'a>,
    pending: Vec<u8>,
}

impl<'a> TextStream<'a> {
    pub fn new(f: &'a ChatFormat<'a>) -> Self {
        TextStream {
            f,
            pending: Vec::new(),
        }
    }

    /// The text that token `id` completes (often empty: part of a character, or a special
    /// token that is not shown).
    pub fn push(&mut self, id: u32) -> String {
        let marker = self.f.tokens().and_then(|t| match id {
            x if x == t.python_start => Some("[calc: "),
            x if x == t.output_start => Some(" = "),
            x if x == t.output_end => Some("]"),
            x if x == t.python_end => Some(""),
            _ => None,
        });
        match (marker, self.f.tok.token_bytes(id)) {
            (Some(m), _) => {
                let mut s = self.flush(true);
                s.push_str(m);
                s
            }
            (None, Some(bytes)) => {
                self.pending.extend_from_slice(bytes);
                self.flush(false)
            }
            (None, None) => String::new(), // another special token: not shown
        }
    }

    /// Whatever is still held back, lossily: call it when the reply ends.
    pub fn finish(&mut self) -> String {
        self.flush(true)
    }

    /// The complete UTF-8 held; with `all`, the rest too (invalid bytes as U+FFFD).
    fn flush(&mut self, all: bool) -> String {
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() && !all => e.valid_up_to(),
            Err(_) => {
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return s;
            }
        };
        let s = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_never_splits_a_character_and_shows_calls_as_display_does() {
        let tok = bpe::Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap();
        let f = ChatFormat::new(&tok).unwrap();
        let mut s = TextStream::new(&f);
        let pieces: Vec<String> = "é=".bytes().map(|b| s.push(b as u32)).collect();
        assert_eq!(
            pieces,
            vec!["", "é", "="],
            "the two bytes of é come together"
        );
        let t = f.tokens().unwrap();
        let ids = [
            b'x' as u32,
            t.python_start,
            b'1' as u32,
            t.python_end,
            t.output_start,
            b'1' as u32,
            t.output_end,
            0xC3, // half a character, then the end
        ];
        let mut streamed: String = ids.iter().map(|&id| s.push(id)).collect();
        streamed.push_str(&s.finish());
        assert_eq!(streamed, "x[calc: 1 = 1]\u{fffd}");
        assert_eq!(f.parse_reply(&ids[..7]).display(), "x[calc: 1 = 1]");
    }
}
