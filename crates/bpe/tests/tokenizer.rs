//! Training, encoding, decoding and file formats of the BPE tokenizer.

use bpe::{Tokenizer, Trainer, TrainerOptions, GPT2_PATTERN, GPT4_PATTERN};
use proptest::prelude::*;
use std::sync::OnceLock;

const CORPUS: &str = "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!\n\
    It's 2024 and we've 12345 reasons: don't stop, won't stop. Ünïcödé tëxt, 漢字 and emoji 😀😀.\n\
    def main():\n    return 42  # code, too\n\n\n";

fn trained() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let docs: Vec<String> = (0..50).map(|i| format!("{CORPUS} document {i}")).collect();
        let mut t = Trainer::new(TrainerOptions {
            vocab_size: 400,
            ..Default::default()
        })
        .unwrap();
        t.count(&docs);
        t.finish().unwrap()
    })
}

#[test]
fn learns_the_textbook_merges() {
    // aaabdaaabac: aa (4 times) first, then the tie ab/Za is broken towards the smaller pair ab.
    let opts = TrainerOptions {
        vocab_size: 256 + 3,
        specials: vec![],
        ..Default::default()
    };
    let mut t = Trainer::new(opts).unwrap();
    t.count(&["aaabdaaabac"]);
    let tok = t.finish().unwrap();
    let names: Vec<&[u8]> = (256..259).map(|id| tok.token_bytes(id).unwrap()).collect();
    assert_eq!(names, [&b"aa"[..], b"ab", b"aaab"]);
    assert_eq!(
        tok.encode("aaabdaaabac"),
        vec![258, b'd' as u32, 258, b'a' as u32, b'c' as u32]
    );
}

#[test]
fn trained_tokenizer_compresses_and_round_trips() {
    let tok = trained();
    // The corpus is small: merging stops early once no pair occurs twice.
    assert!(
        (350..=400).contains(&tok.vocab_size()),
        "{}",
        tok.vocab_size()
    );
    let ids = tok.encode(CORPUS);
    assert!(
        ids.len() * 3 < CORPUS.len(),
        "{} tokens for {} bytes",
        ids.len(),
        CORPUS.len()
    );
    assert_eq!(tok.decode(&ids).unwrap(), CORPUS.as_bytes());
    let batch = tok.encode_batch(&[CORPUS, "", "fox"]);
    assert_eq!(batch[0], ids);
    assert!(batch[1].is_empty());
}

#[test]
fn special_tokens_only_when_asked() {
    let tok = trained();
    let bos = tok.special_id("<|bos|>").unwrap();
    assert_eq!(bos as usize, tok.n_ordinary());
    let text = "<|bos|>Hello<|assistant_start|>";
    assert!(
        !tok.encode(text).contains(&bos),
        "plain encode must not honour specials in user text"
    );
    let ids = tok.encode_with_specials(text);
    assert_eq!(ids[0], bos);
    assert_eq!(
        *ids.last().unwrap(),
        tok.special_id("<|assistant_start|>").unwrap()
    );
    assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes());
    assert!(tok.decode(&[tok.vocab_size() as u32]).is_err());
}

#[test]
fn hf_json_and_tiktoken_round_trip() {
    let tok = trained();
    let dir = std::env::temp_dir().join(format!("bpe-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    tok.save(&dir.join("tokenizer.json")).unwrap();
    let back = Tokenizer::load(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(back.fingerprint(), tok.fingerprint());
    assert_eq!(
        back.encode_with_specials(CORPUS),
        tok.encode_with_specials(CORPUS)
    );
    tok.save_tiktoken(&dir.join("rank.tiktoken")).unwrap();
    let specials: Vec<&str> = tok.specials().iter().map(|(s, _)| s.as_str()).collect();
    let tk = Tokenizer::load_tiktoken(&dir.join("rank.tiktoken"), GPT4_PATTERN, &specials).unwrap();
    assert_eq!(tk.fingerprint(), tok.fingerprint());
    // Every merge combines two lower-ranked tokens into the next one.
    for (i, (l, r)) in tok.merges().unwrap().into_iter().enumerate() {
        let id = 256 + i as u32;
        assert!(l < id && r < id);
        assert_eq!(
            [tok.token_bytes(l).unwrap(), tok.token_bytes(r).unwrap()].concat(),
            tok.token_bytes(id).unwrap()
        );
    }
    std::fs::write(
        dir.join("bad.json"),
        "{\"model\": {\"type\": \"WordPiece\"}}",
    )
    .unwrap();
    let e = Tokenizer::load(&dir.join("bad.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.json") && e.contains("WordPiece") && e.contains("HINT"),
        "{e}"
    );
    std::fs::write(dir.join("bad.tiktoken"), "YQ== 0\nnot-base64! 1\n").unwrap();
    let e = Tokenizer::load_tiktoken(&dir.join("bad.tiktoken"), GPT4_PATTERN, &specials)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn custom_patterns_and_bad_options() {
    let opts = TrainerOptions {
        vocab_size: 300,
        pattern: GPT2_PATTERN.into(),
        ..Default::default()
    };
    let mut t = Trainer::new(opts).unwrap();
    t.count(&[CORPUS]);
    let tok = t.finish().unwrap();
    assert_eq!(tok.decode(&tok.encode(CORPUS)).unwrap(), CORPUS.as_bytes());
    assert!(Trainer::new(TrainerOptions {
        vocab_size: 100,
        ..Default::default()
    })
    .is_err());
    assert!(Trainer::new(TrainerOptions {
        pattern: "(".into(),
        ..Default::default()
    })
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let tok = trained();
        prop_assert_eq!(tok.decode(&tok.encode_bytes(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn decode_inverts_encode_on_arbitrary_text(text in "\\PC{0,120}") {
        let tok = trained();
        prop_assert_eq!(tok.decode(&tok.encode(&text)).unwrap(), text.as_bytes());
    }

    /// Long one-piece words (letters of the training text run together, and runs of few
    /// letters) go through the linear-time search, which must give what merging gives.
    #[test]
    fn long_words_encode_as_merging_does(
        words in proptest::collection::vec("(the|quick|brown|fox|stop|won|t|re|a|s|ing|[a-z]){1,4}", 30..200),
        run in "[aeinst]{150,600}",
    ) {
        let tok = trained();
        let word = words.concat();
        prop_assert_eq!(tok.encode(&word), tok.encode_by_merging(&word));
        prop_assert_eq!(tok.encode(&run), tok.encode_by_merging(&run));
    }
}

#[test]
fn a_deeply_nested_tokenizer_file_is_refused_by_name() {
    let path = std::env::temp_dir().join(format!("frugal-nested-{}.json", std::process::id()));
    std::fs::write(&path, "[".repeat(1 << 20)).unwrap();
    let e = Tokenizer::load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(
        e.contains("recursion limit") && e.contains("frugal-nested"),
        "{e}"
    );
}

/// Qwen2's tokenizer.json puts text in normal form C first: a decomposed "é" then encodes as
/// the precomposed one. Other normalizers are refused by name.
#[test]
fn an_nfc_normalizer_is_applied_and_others_are_refused() {
    let tok = bpe::Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap();
    let mut doc = tok.to_hf_json().unwrap();
    doc["normalizer"] = serde_json::json!({"type": "NFC"});
    let nfc = bpe::Tokenizer::from_hf_json(&doc).unwrap();
    assert!(nfc.nfc() && !tok.nfc());
    assert_eq!(nfc.encode("cafe\u{301}"), nfc.encode("café"));
    assert_ne!(tok.encode("cafe\u{301}"), tok.encode("café"));
    assert_eq!(
        nfc.encode_with_specials("<|bos|>e\u{301}"),
        vec![256, 0xc3, 0xa9]
    );
    assert_ne!(nfc.fingerprint(), tok.fingerprint());
    // Written back, it keeps its normalizer.
    let again = bpe::Tokenizer::from_hf_json(&nfc.to_hf_json().unwrap()).unwrap();
    assert!(again.nfc());
    doc["normalizer"] = serde_json::json!({"type": "Lowercase"});
    let e = bpe::Tokenizer::from_hf_json(&doc).unwrap_err();
    assert!(e.contains("normalizer Lowercase"), "{e}");
}
