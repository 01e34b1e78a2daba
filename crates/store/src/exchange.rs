//! Preference datasets in and out of the store: pairs read by `data::pairs::read_pairs`
//! become judged items, and judged items become pairs again.

use super::annotators::check_name;
use super::{check_prompt, insert_item, insert_prompt, insert_vote, sha256_hex};
use super::{now_ms, Choice, Store, VoteOutcome};
use crate::{Error, Result};
use data::pairs::{Pair, Read};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// What an import added and left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub pairs: usize,
    pub items_added: usize,
    pub votes_added: usize,
    /// Pairs already in the store with the same judgement (a second import of a file).
    pub duplicates: usize,
    /// Pairs the store holds the opposite judgement for, from the same annotator: kept as stored.
    pub conflicts: usize,
    /// Pairs whose two replies are the same text.
    pub identical: usize,
}

/// The store's votes as preference pairs, and what cannot be a pair.
/// Whose judgements an export keeps: the annotation page's people, imported datasets (the
/// `dataset:` names), or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    #[default]
    All,
    Page,
    Datasets,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::All => "all",
            Source::Page => "page",
            Source::Datasets => "datasets",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exported {
    pub pairs: Vec<Pair>,
    pub votes: usize,
    pub ties: usize,
    pub both_harmful: usize,
    /// (chosen, other) combinations left out because the two texts are the same.
    pub identical: usize,
}

impl Store {
    /// Adds pairs read by `data::pairs::read_pairs`: each becomes a prompt, two
    /// responses (in an order that does not reveal the chosen one), an item off the page's
    /// queue, and a vote by the pair's annotator (the dataset's name, e.g. "hh-rlhf"). The
    /// same pair again adds nothing. One transaction: a failed import leaves the store as it was.
    pub fn import(&mut self, read: &Read, source: &str) -> Result<Imported> {
        let db = self.db();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db)?;
        let mut out = Imported {
            pairs: read.pairs.len(),
            ..Default::default()
        };
        for p in &read.pairs {
            if p.chosen == p.rejected {
                out.identical += 1;
                continue;
            }
            if let Err(e) = check_prompt(&p.prompt) {
                return Err(Error::from(base::Error::input(
                    source,
                    format!("a pair's prompt is not valid: {e}"),
                    "read_pairs should have refused it; report this",
                )));
            }
            check_name(&p.annotator)?;
            let (prompt, _) = insert_prompt(&tx, &p.prompt, source).map_err(&db)?;
            let prompt_hash: String = tx
                .query_row(
                    "SELECT content_sha256 FROM prompts WHERE id = ?1",
                    [prompt],
                    |r| r.get(0),
                )
                .map_err(&db)?;
            // Sorted texts: the position of the chosen reply follows from the texts alone.
            let mut texts = [p.chosen.as_str(), p.rejected.as_str()];
            texts.sort_unstable();
            let key = sha256_hex(
                serde_json::json!([prompt_hash, texts[0], texts[1]])
                    .to_string()
                    .as_bytes(),
            );
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM items WHERE import_sha256 = ?1",
                    [&key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&db)?;
            let item = match existing {
                Some(id) => id,
                None => {
                    let responses: Vec<(String, String)> = texts
                        .iter()
                        .map(|t| (t.to_string(), source.to_string()))
                        .collect();
                    out.items_added += 1;
                    insert_item(&tx, prompt, &responses, false, Some(&key)).map_err(&db)?
                }
            };
            let annotator = dataset_annotator(&tx, &p.annotator).map_err(&db)?;
            let chosen = Choice::Response(usize::from(texts[0] != p.chosen.as_str()));
            match insert_vote(&tx, item, annotator, chosen).map_err(&db)? {
                Ok(VoteOutcome::Recorded) => out.votes_added += 1,
                Ok(VoteOutcome::Unchanged) => out.duplicates += 1,
                Err(_) => out.conflicts += 1,
            }
        }
        tx.commit().map_err(&db)?;
        Ok(out)
    }

    /// Every vote as preference pairs (`read_pairs` reads them back): a preferred response
    /// makes one pair against each other response of its item; ties and both-harmful
    /// judgements are counted, not paired.
    pub fn export(&self) -> Result<Exported> {
        self.export_from(Source::All)
    }

    /// `export`, keeping to the judgements of one provenance.
    pub fn export_from(&self, source: Source) -> Result<Exported> {
        let mut out = Exported::default();
        let mut st = self
            .conn
            .prepare(
                "SELECT v.item_id, a.name, v.choice, p.id, p.conversation FROM votes v
                 JOIN annotators a ON a.id = v.annotator_id
                 JOIN items i ON i.id = v.item_id JOIN prompts p ON p.id = i.prompt_id
                 WHERE ?1 = 'all' OR (?1 = 'datasets') = (substr(a.name, 1, length(?2)) = ?2)
                 ORDER BY v.item_id, a.name",
            )
            .map_err(self.db())?;
        let rows = st
            .query_map(params![source.as_str(), crate::DATASET_PREFIX], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(self.db())?;
        for row in rows {
            let (item, annotator, label, prompt_id, json) = row.map_err(self.db())?;
            out.votes += 1;
            let c = match Choice::from_label(&label) {
                Some(Choice::Response(c)) => c,
                Some(Choice::Tie) => {
                    out.ties += 1;
                    continue;
                }
                Some(Choice::BothHarmful) => {
                    out.both_harmful += 1;
                    continue;
                }
                None => {
                    return Err(Error::Schema {
                        path: self.path.clone(),
                        msg: format!("a vote on item {item} holds the unknown choice {label:?}"),
                        hint: "the row was edited by hand; fix or delete it".into(),
                    })
                }
            };
            let prompt = self.conversation(prompt_id, &json)?;
            let texts = self.item_texts(item)?;
            let others = texts.iter().enumerate().filter(|&(j, _)| j != c);
            for other in others.map(|(_, t)| t) {
                if *other == texts[c] {
                    out.identical += 1;
                    continue;
                }
                out.pairs.push(Pair {
                    prompt: prompt.clone(),
                    chosen: texts[c].clone(),
                    rejected: other.clone(),
                    annotator: annotator.clone(),
                });
            }
        }
        Ok(out)
    }
}

/// The annotator a dataset's judgements are filed under: `name` in the dataset namespace
/// (`dataset:NAME`; a name already in it is kept), created without a token.
fn dataset_annotator(tx: &rusqlite::Transaction, name: &str) -> rusqlite::Result<i64> {
    let name = if name.starts_with(crate::DATASET_PREFIX) {
        name.to_string()
    } else {
        format!("{}{name}", crate::DATASET_PREFIX)
    };
    let name = name.as_str();
    tx.execute(
        "INSERT INTO annotators (name, token_sha256, created_at) VALUES (?1, NULL, ?2)
         ON CONFLICT(name) DO NOTHING",
        params![name, now_ms()],
    )?;
    tx.query_row("SELECT id FROM annotators WHERE name = ?1", [name], |r| {
        r.get(0)
    })
}
