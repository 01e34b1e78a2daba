use super::*;
use data::chat::Message;
use data::pairs::{Pair, Read};

/// A fresh store in a scratch directory named for the test.
fn fresh(name: &str) -> (PathBuf, Store) {
    let dir = std::env::temp_dir().join(format!("frugal-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("prefs.sqlite");
    let store = Store::open(&path).unwrap();
    (dir, store)
}

fn user(text: &str) -> Conversation {
    Conversation {
        messages: vec![Message::text(Role::User, text)],
    }
}

/// A queued item of `n` responses to `prompt`.
fn sampled(s: &mut Store, prompt: &str, n: usize) -> i64 {
    let (p, _) = s.add_prompt(&user(prompt), "test").unwrap();
    let responses: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{prompt} reply {i}"), "sft:step-1".into()))
        .collect();
    s.add_sampled(p, &responses).unwrap()
}

/// A vote from the page: the item shown to the annotator (as `next_item` records), then
/// judged. An item that does not exist cannot be shown; the vote then says so.
fn shown_vote(
    s: &mut Store,
    annotator: i64,
    item: i64,
    choice: Choice,
) -> std::result::Result<VoteOutcome, VoteError> {
    let _ = s.mark_served(item, annotator);
    s.vote(annotator, item, choice)
}

fn pair(prompt: &str, chosen: &str, rejected: &str, annotator: &str) -> Pair {
    Pair {
        prompt: user(prompt),
        chosen: chosen.into(),
        rejected: rejected.into(),
        annotator: annotator.into(),
    }
}

#[test]
fn schema_is_created_versioned_and_a_newer_one_refused() {
    let (dir, s) = fresh("schema");
    let path = s.path().to_path_buf();
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    drop(s);
    // Reopening keeps the version; a newer one is refused without touching the file.
    Store::open(&path).unwrap();
    let c = Connection::open(&path).unwrap();
    c.execute(
        "UPDATE schema_version SET version = ?1",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(c);
    let e = Store::open(&path).err().unwrap().to_string();
    assert!(e.contains("newer frugal") && e.contains("HINT"), "{e}");
    // A SQLite file of something else, and a file that is not SQLite at all.
    let other = dir.join("other.sqlite");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = Store::open(&other).err().unwrap().to_string();
    assert!(e.contains("not a preference store"), "{e}");
    let junk = dir.join("junk.sqlite");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let e = Store::open(&junk).err().unwrap().to_string();
    assert!(e.contains("junk.sqlite") && e.contains("HINT"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokens_authenticate_only_their_annotator_and_are_stored_hashed() {
    let (dir, mut s) = fresh("tokens");
    let amy = s.add_annotator("amy").unwrap();
    let bob = s.add_annotator("bob").unwrap();
    assert_eq!(amy.len(), 32);
    assert_ne!(amy, bob);
    assert_eq!(s.authenticate(&amy).unwrap().unwrap().name, "amy");
    assert_eq!(s.authenticate(&bob).unwrap().unwrap().name, "bob");
    assert_eq!(s.authenticate("").unwrap(), None);
    assert_eq!(s.authenticate(&amy[..31]).unwrap(), None);
    assert_eq!(s.authenticate(&amy.to_uppercase()).unwrap(), None);
    let stored: String = s
        .conn
        .query_row(
            "SELECT token_sha256 FROM annotators WHERE name = 'amy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_ne!(stored, amy, "the token itself is never stored");
    assert_eq!(stored, sha256_hex(amy.as_bytes()));
    // Names are unique and printable; rotation invalidates the old token.
    assert!(s
        .add_annotator("amy")
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    assert!(s.add_annotator(" amy").is_err());
    assert!(s.add_annotator("a\u{7}").is_err());
    assert!(s.add_annotator("").is_err());
    let amy2 = s.rotate_token("amy").unwrap();
    assert_eq!(s.authenticate(&amy).unwrap(), None);
    assert_eq!(s.authenticate(&amy2).unwrap().unwrap().name, "amy");
    assert!(s.rotate_token("zed").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_double_vote_is_idempotent_and_a_changed_one_refused() {
    let (dir, mut s) = fresh("votes");
    let item = sampled(&mut s, "hello", 2);
    s.add_annotator("amy").unwrap();
    let amy = 1;
    assert_eq!(
        shown_vote(&mut s, amy, item, Choice::Response(1)).unwrap(),
        VoteOutcome::Recorded
    );
    assert_eq!(
        shown_vote(&mut s, amy, item, Choice::Response(1)).unwrap(),
        VoteOutcome::Unchanged
    );
    match shown_vote(&mut s, amy, item, Choice::Tie) {
        Err(VoteError::Conflict { previous, .. }) => assert_eq!(previous, Choice::Response(1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let n: i64 = s
        .conn
        .query_row("SELECT COUNT(*) FROM votes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        s.votes().unwrap(),
        vec![(item, "amy".into(), Choice::Response(1))]
    );
    // Unknown items and out-of-range choices store nothing.
    assert!(matches!(
        shown_vote(&mut s, amy, 999, Choice::Tie),
        Err(VoteError::UnknownItem(999))
    ));
    assert!(matches!(
        shown_vote(&mut s, amy, item, Choice::Response(2)),
        Err(VoteError::BadChoice { responses: 2, .. })
    ));
    assert_eq!(s.votes().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn next_item_prefers_items_another_annotator_judged() {
    let (dir, mut s) = fresh("next");
    let items: Vec<i64> = (0..4)
        .map(|i| sampled(&mut s, &format!("p{i}"), 2))
        .collect();
    for name in ["amy", "bob", "cat"] {
        s.add_annotator(name).unwrap();
    }
    let (amy, bob, cat) = (1, 2, 3);
    assert_eq!(s.next_item(amy).unwrap().unwrap().id, items[0]);
    shown_vote(&mut s, amy, items[2], Choice::Response(0)).unwrap();
    // bob is offered what amy judged; amy goes on with the oldest unjudged.
    assert_eq!(s.next_item(bob).unwrap().unwrap().id, items[2]);
    assert_eq!(s.next_item(amy).unwrap().unwrap().id, items[0]);
    shown_vote(&mut s, bob, items[2], Choice::Response(0)).unwrap();
    // With two labels, items[2] falls behind the unjudged ones for cat.
    assert_eq!(s.next_item(cat).unwrap().unwrap().id, items[0]);
    let item = s.next_item(bob).unwrap().unwrap();
    assert_eq!(item.prompt, user("p0"));
    assert_eq!(item.responses, vec!["p0 reply 0", "p0 reply 1"]);
    for &i in &items {
        let _ = shown_vote(&mut s, amy, i, Choice::Tie);
    }
    assert_eq!(s.next_item(amy).unwrap(), None);
    assert_eq!(
        s.progress(amy).unwrap(),
        Progress {
            voted: 4,
            remaining: 0,
            total: 4
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompts_are_deduplicated_and_checked() {
    let (dir, mut s) = fresh("prompts");
    let (a, new) = s.add_prompt(&user("hi"), "file").unwrap();
    assert!(new);
    assert_eq!(s.add_prompt(&user("hi"), "other").unwrap(), (a, false));
    let (b, _) = s.add_prompt(&user("there"), "file").unwrap();
    assert_eq!(
        s.prompts_without_responses()
            .unwrap()
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![a, b]
    );
    s.add_sampled(a, &[("x".into(), "m".into()), ("y".into(), "m".into())])
        .unwrap();
    assert_eq!(s.prompts_without_responses().unwrap().len(), 1);
    let ends_with_reply = Conversation {
        messages: vec![
            Message::text(Role::User, "q"),
            Message::text(Role::Assistant, "a"),
        ],
    };
    assert!(check_prompt(&ends_with_reply).unwrap_err().contains("user"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_twice_adds_nothing_and_keeps_judgements() {
    let (dir, mut s) = fresh("import");
    let read = Read {
        pairs: vec![
            pair("q1", "good", "bad", "hh-rlhf"),
            pair("q2", "alpha", "beta", "hh-rlhf"),
            // A second annotator judging the first pair: same item, second vote.
            pair("q1", "good", "bad", "amy"),
            pair("q3", "same", "same", "hh-rlhf"),
        ],
        ..Default::default()
    };
    let first = s.import(&read, "file.jsonl").unwrap();
    assert_eq!(
        first,
        Imported {
            pairs: 4,
            items_added: 2,
            votes_added: 3,
            identical: 1,
            ..Default::default()
        }
    );
    let again = s.import(&read, "file.jsonl").unwrap();
    assert_eq!((again.items_added, again.votes_added), (0, 0));
    assert_eq!(again.duplicates, 3);
    // The opposite judgement from the same annotator is a conflict; the stored one stays.
    let flipped = Read {
        pairs: vec![pair("q1", "bad", "good", "amy")],
        ..Default::default()
    };
    assert_eq!(s.import(&flipped, "f2").unwrap().conflicts, 1);
    let st = s.stats().unwrap();
    assert_eq!((st.imported_items, st.imported_votes, st.items), (2, 3, 0));
    // Dataset annotators exist, but nobody can log in as them.
    let hh = st
        .annotators
        .iter()
        .find(|a| a.name == "dataset:hh-rlhf")
        .unwrap();
    assert_eq!((hh.votes, hh.has_token), (2, false));
    // Imported items never reach the annotation page, and the person amy is not the dataset
    // annotator "amy" of the import: its votes are not hers, and she cannot vote on its items.
    let token = s.add_annotator("amy").unwrap();
    let amy = s.authenticate(&token).unwrap().unwrap();
    assert_eq!(s.next_item(amy.id).unwrap(), None);
    let st = s.stats().unwrap();
    let votes_of = |name: &str| st.annotators.iter().find(|a| a.name == name).unwrap().votes;
    assert_eq!((votes_of("amy"), votes_of("dataset:amy")), (0, 1));
    assert!(matches!(
        s.vote(amy.id, 1, Choice::Response(0)),
        Err(VoteError::NotServed(1))
    ));
    assert!(
        s.add_annotator("dataset:eve").is_err(),
        "the dataset namespace is reserved"
    );
    // The chosen reply is not always shown first.
    let firsts: Vec<String> = (1..=2)
        .map(|i| s.item(i).unwrap().unwrap().responses[0].clone())
        .collect();
    assert_eq!(firsts, vec!["bad", "alpha"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_pairs_read_back_through_read_pairs() {
    let (dir, mut s) = fresh("export");
    let three = sampled(&mut s, "three <script>alert(1)</script>", 3);
    let two = sampled(&mut s, "two", 2);
    let tie = sampled(&mut s, "tie", 2);
    let harm = sampled(&mut s, "harm", 2);
    s.add_annotator("amy").unwrap();
    s.add_annotator("bob").unwrap();
    shown_vote(&mut s, 1, three, Choice::Response(2)).unwrap();
    shown_vote(&mut s, 2, three, Choice::Response(0)).unwrap();
    shown_vote(&mut s, 1, two, Choice::Response(1)).unwrap();
    shown_vote(&mut s, 1, tie, Choice::Tie).unwrap();
    shown_vote(&mut s, 2, harm, Choice::BothHarmful).unwrap();
    s.import(
        &Read {
            pairs: vec![pair("imported", "yes", "no", "hh-rlhf")],
            ..Default::default()
        },
        "hh.jsonl",
    )
    .unwrap();
    let ex = s.export().unwrap();
    assert_eq!((ex.votes, ex.ties, ex.both_harmful), (6, 1, 1));
    // Provenance: the page's people, or the datasets.
    let page = s.export_from(Source::Page).unwrap();
    let datasets = s.export_from(Source::Datasets).unwrap();
    assert_eq!((page.votes, page.pairs.len()), (5, 5));
    assert_eq!(
        datasets.pairs,
        vec![pair("imported", "yes", "no", "dataset:hh-rlhf")]
    );
    // 3 responses: 2 pairs per vote, two votes; then 1 + 1 imported.
    assert_eq!(ex.pairs.len(), 6);
    let t = "three <script>alert(1)</script>";
    assert_eq!(
        ex.pairs[0],
        pair(t, &format!("{t} reply 2"), &format!("{t} reply 0"), "amy")
    );
    assert_eq!(
        ex.pairs[1],
        pair(t, &format!("{t} reply 2"), &format!("{t} reply 1"), "amy")
    );
    assert_eq!(ex.pairs[2].annotator, "bob");
    assert_eq!(
        ex.pairs[5],
        pair("imported", "yes", "no", "dataset:hh-rlhf")
    );
    let file = dir.join("prefs.jsonl");
    let text: String = ex
        .pairs
        .iter()
        .map(|p| data::pairs::to_json(p).to_string() + "\n")
        .collect();
    std::fs::write(&file, text).unwrap();
    let back = data::pairs::read_pairs(&file).unwrap();
    assert_eq!(back.skipped, 0);
    assert_eq!(back.pairs, ex.pairs);
    // And importing the export into a fresh store gives the same pairs again.
    let (dir2, mut s2) = fresh("export-2");
    s2.import(&back, "prefs.jsonl").unwrap();
    let mut again = s2.export().unwrap().pairs;
    // Re-imported, every judgement is a dataset's: the page's annotators gain the prefix.
    let mut want: Vec<Pair> = ex
        .pairs
        .iter()
        .map(|p| Pair {
            annotator: match p.annotator.strip_prefix(DATASET_PREFIX) {
                Some(_) => p.annotator.clone(),
                None => format!("{DATASET_PREFIX}{}", p.annotator),
            },
            ..p.clone()
        })
        .collect();
    let key = |p: &Pair| {
        (
            p.prompt.messages[0].display(),
            p.chosen.clone(),
            p.rejected.clone(),
            p.annotator.clone(),
        )
    };
    again.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(again, want);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[test]
fn stats_count_progress_and_agreement() {
    let (dir, mut s) = fresh("stats");
    let items: Vec<i64> = (0..3)
        .map(|i| sampled(&mut s, &format!("p{i}"), 2))
        .collect();
    s.add_annotator("amy").unwrap();
    s.add_annotator("bob").unwrap();
    shown_vote(&mut s, 1, items[0], Choice::Response(0)).unwrap();
    shown_vote(&mut s, 2, items[0], Choice::Response(0)).unwrap();
    shown_vote(&mut s, 1, items[1], Choice::Response(1)).unwrap();
    shown_vote(&mut s, 2, items[1], Choice::Tie).unwrap();
    shown_vote(&mut s, 1, items[2], Choice::Response(0)).unwrap();
    let st = s.stats().unwrap();
    assert_eq!(
        (st.items, st.items_voted, st.items_double, st.votes),
        (3, 3, 2, 5)
    );
    assert_eq!(st.agreement.items, 2);
    assert_eq!(st.agreement.raw, Some(0.5));
    assert_eq!(st.agreement.pairs.len(), 1);
    // amy (0, 1) vs bob (0, tie): p_o = 1/2, p_e = (1/2)(1/2) = 1/4, κ = (1/4)/(3/4) = 1/3.
    let k = st.agreement.pairs[0].kappa.unwrap();
    assert!((k - 1.0 / 3.0).abs() < 1e-12, "{k}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn votes_count_only_on_items_the_page_served() {
    let (dir, mut s) = fresh("served");
    let first = sampled(&mut s, "first", 2);
    let second = sampled(&mut s, "second", 2);
    let token = s.add_annotator("amy").unwrap();
    let amy = s.authenticate(&token).unwrap().unwrap().id;
    // Item ids are sequential: guessing one the page has not shown is refused.
    assert!(matches!(
        s.vote(amy, second, Choice::Response(0)),
        Err(VoteError::NotServed(id)) if id == second
    ));
    assert_eq!(s.next_item(amy).unwrap().unwrap().id, first);
    assert_eq!(
        s.vote(amy, first, Choice::Response(1)).unwrap(),
        VoteOutcome::Recorded
    );
    assert_eq!(s.votes().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_version_1_store_migrates_its_dataset_votes_out_of_persons_names() {
    let dir = std::env::temp_dir().join(format!("frugal-store-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prefs.sqlite");
    // What today's main wrote: schema 1, a person (alice) with a page vote on a queued item,
    // and on an imported item both the dataset's vote and one filed under alice.
    let c = Connection::open(&path).unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c.execute_batch(
        "INSERT INTO schema_version VALUES (1);
         INSERT INTO annotators VALUES (1, 'alice', 'ab12', 0), (2, 'hh-rlhf', NULL, 0);
         INSERT INTO prompts VALUES (1, '{\"messages\":[]}', 't', 'p1', 0),
                                    (2, '{\"messages\":[]}', 't', 'p2', 0);
         INSERT INTO responses VALUES (1, 1, 'a', 'sft', 0), (2, 1, 'b', 'sft', 0),
                                      (3, 2, 'c', 'hh', 0), (4, 2, 'd', 'hh', 0);
         INSERT INTO items VALUES (1, 1, 1, NULL, 0), (2, 2, 0, 'k', 0);
         INSERT INTO item_responses VALUES (1, 0, 1), (1, 1, 2), (2, 0, 3), (2, 1, 4);
         INSERT INTO votes VALUES (1, 1, 1, '0', 0), (2, 2, 1, '1', 0), (3, 2, 2, '0', 0);",
    )
    .unwrap();
    drop(c);
    let mut s = Store::open(&path).unwrap();
    let v: i64 = s
        .conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert_eq!(
        s.votes().unwrap(),
        vec![
            (1, "alice".into(), Choice::Response(0)),
            (2, "dataset:alice".into(), Choice::Response(1)),
            (2, "dataset:hh-rlhf".into(), Choice::Response(0)),
        ]
    );
    // alice's page vote stands (the item counts as served to her): the same vote again is
    // unchanged, a different one a conflict; nothing was lost.
    assert_eq!(
        s.vote(1, 1, Choice::Response(0)).unwrap(),
        VoteOutcome::Unchanged
    );
    assert!(matches!(
        s.vote(1, 2, Choice::Response(0)),
        Err(VoteError::NotServed(2))
    ));
    drop(s);
    // Opening again changes nothing more.
    let s = Store::open(&path).unwrap();
    assert_eq!(s.votes().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
