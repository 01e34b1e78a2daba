//! Filling the store from a tiny model: N replies per prompt, one item each, reproducible
//! with a seed, prompts too long for the context left out and reported.

#[path = "../../stages/tests/common/mod.rs"]
mod frugal_common;

use data::chat::{ChatFormat, Conversation, Message, Role};
use serve::sample::{fill, SampleConfig};
use store::Store;
use train::checkpoint::load_trained;

fn user(text: &str) -> Conversation {
    Conversation {
        messages: vec![Message::text(Role::User, text)],
    }
}

#[test]
fn fill_samples_replies_for_prompts_without_them() {
    let dir = frugal_common::temp("serve-fill");
    let run = frugal_common::tiny_run(&dir);
    let trained = load_trained(&run, true).unwrap();
    assert_eq!(trained.stage, "sft");
    let f = ChatFormat::new(&trained.tok).unwrap();
    let cfg = SampleConfig {
        responses: 3,
        max_tokens: 12,
        seed: 7,
        ..Default::default()
    };
    let fill_store = |name: &str| {
        let mut s = Store::open(&dir.join(name)).unwrap();
        for p in ["hi", "what is 2+2?", &"long ".repeat(20)] {
            s.add_prompt(&user(p), "test").unwrap();
        }
        let mut seen = Vec::new();
        let filled = fill(&mut s, &trained.model, &f, "sft:step-5", &cfg, |d, t| {
            seen.push((d, t))
        })
        .unwrap();
        (s, filled, seen)
    };
    let (mut s, filled, seen) = fill_store("a.sqlite");
    assert_eq!(filled.items, 2);
    assert_eq!(
        filled.skipped, 1,
        "the 100-byte prompt does not fit a 64-token context"
    );
    assert!(filled.first_skip.unwrap().contains("prompt 3"));
    assert_eq!(seen, vec![(1, 3), (2, 3)]);
    let items: Vec<_> = (1..=2).map(|i| s.item(i).unwrap().unwrap()).collect();
    assert_eq!(items[0].prompt, user("hi"));
    assert!(items.iter().all(|i| i.responses.len() == 3));
    // Sampled, not greedy: replies to one prompt differ (a random tiny model babbles).
    assert!(items[0].responses[0] != items[0].responses[1]);
    // A second fill finds nothing new but the prompt that does not fit.
    let again = fill(&mut s, &trained.model, &f, "x", &cfg, |_, _| {}).unwrap();
    assert_eq!((again.items, again.skipped), (0, 1));
    // The same seed gives the same replies in another store.
    let (s2, _, _) = fill_store("b.sqlite");
    assert_eq!(s2.item(1).unwrap().unwrap(), items[0]);
    // One reply cannot be compared.
    let one = SampleConfig {
        responses: 1,
        ..cfg
    };
    let e = fill(&mut s, &trained.model, &f, "x", &one, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
