//! Inter-annotator agreement on items judged more than once.
//!
//! Labels are the choices themselves ("0", "1", "tie", "both_harmful"), so agreeing means
//! making the same choice. Reported:
//! - raw agreement: the fraction of agreeing annotator pairs, pooled over items (an item
//!   judged by k annotators contributes k(k-1)/2 pairs);
//! - Cohen's kappa for each pair of annotators over the items both judged:
//!   κ = (p_o − p_e) / (1 − p_e), p_o the fraction of those items they agree on, p_e the
//!   agreement expected by chance from each one's own label frequencies on them;
//! - Fleiss' kappa over all items with two judgements or more, in the form that allows a
//!   different number of judges per item: P̄ is the mean over items of
//!   (Σ_c n_ic² − n_i) / (n_i(n_i − 1)), and P_e = Σ_c p_c² with p_c the share of label c
//!   among all those judgements.
//!
//! A kappa is `None` when chance agreement is already 1 (everyone used one label), where it is
//! undefined.

use crate::Choice;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    /// Items both judged.
    pub items: usize,
    pub agreement: f64,
    pub kappa: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Agreement {
    /// Items with two judgements or more.
    pub items: usize,
    /// Pooled raw agreement over annotator pairs on those items; None without any.
    pub raw: Option<f64>,
    pub fleiss_kappa: Option<f64>,
    /// One entry per pair of annotators that share an item, by name.
    pub pairs: Vec<PairAgreement>,
}

/// Cohen's kappa of two annotators' labels on the same items (`a[i]` and `b[i]` judge item i).
/// Returns (raw agreement, kappa).
pub fn cohen_kappa<L: Ord>(a: &[L], b: &[L]) -> (f64, Option<f64>) {
    assert_eq!(a.len(), b.len(), "one label from each annotator per item");
    assert!(!a.is_empty(), "kappa needs at least one item");
    let n = a.len() as f64;
    let p_o = a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n;
    let mut freq: BTreeMap<&L, (f64, f64)> = BTreeMap::new();
    for (x, y) in a.iter().zip(b) {
        freq.entry(x).or_default().0 += 1.0;
        freq.entry(y).or_default().1 += 1.0;
    }
    let p_e: f64 = freq.values().map(|(fa, fb)| (fa / n) * (fb / n)).sum();
    (p_o, kappa(p_o, p_e))
}

/// Fleiss' kappa of items each judged by two annotators or more (any number per item).
pub fn fleiss_kappa<L: Ord>(items: &[Vec<L>]) -> Option<f64> {
    let items: Vec<&Vec<L>> = items.iter().filter(|v| v.len() >= 2).collect();
    if items.is_empty() {
        return None;
    }
    let mut totals: BTreeMap<&L, f64> = BTreeMap::new();
    let mut judgements = 0.0;
    let mut p_bar = 0.0;
    for labels in &items {
        let mut counts: BTreeMap<&L, f64> = BTreeMap::new();
        for l in labels.iter() {
            *counts.entry(l).or_default() += 1.0;
            *totals.entry(l).or_default() += 1.0;
        }
        let k = labels.len() as f64;
        judgements += k;
        p_bar += (counts.values().map(|c| c * c).sum::<f64>() - k) / (k * (k - 1.0));
    }
    p_bar /= items.len() as f64;
    let p_e: f64 = totals.values().map(|t| (t / judgements).powi(2)).sum();
    kappa(p_bar, p_e)
}

fn kappa(p_o: f64, p_e: f64) -> Option<f64> {
    (p_e < 1.0 - 1e-12).then(|| (p_o - p_e) / (1.0 - p_e))
}

/// Agreement over votes given as (item, annotator, choice), in any order.
pub fn measure(votes: &[(i64, String, Choice)]) -> Agreement {
    let mut by_item: BTreeMap<i64, Vec<(&str, Choice)>> = BTreeMap::new();
    for (item, who, c) in votes {
        by_item.entry(*item).or_default().push((who.as_str(), *c));
    }
    by_item.retain(|_, v| v.len() >= 2);
    // For each pair of annotators (a < b by name): their labels on shared items.
    type Labels = (Vec<Choice>, Vec<Choice>);
    let mut shared: BTreeMap<(&str, &str), Labels> = BTreeMap::new();
    let (mut agree, mut pairs) = (0usize, 0usize);
    for judged in by_item.values() {
        for (i, &(wa, ca)) in judged.iter().enumerate() {
            for &(wb, cb) in &judged[i + 1..] {
                let ((a, la), (b, lb)) = if wa <= wb {
                    ((wa, ca), (wb, cb))
                } else {
                    ((wb, cb), (wa, ca))
                };
                let e = shared.entry((a, b)).or_default();
                e.0.push(la);
                e.1.push(lb);
                pairs += 1;
                agree += usize::from(ca == cb);
            }
        }
    }
    let labels: Vec<Vec<Choice>> = by_item
        .values()
        .map(|v| v.iter().map(|&(_, c)| c).collect())
        .collect();
    Agreement {
        items: by_item.len(),
        raw: (pairs > 0).then(|| agree as f64 / pairs as f64),
        fleiss_kappa: fleiss_kappa(&labels),
        pairs: shared
            .into_iter()
            .map(|((a, b), (la, lb))| {
                let (agreement, kappa) = cohen_kappa(&la, &lb);
                PairAgreement {
                    a: a.into(),
                    b: b.into(),
                    items: la.len(),
                    agreement,
                    kappa,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Choice::{BothHarmful, Response as R, Tie};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cohen_kappa_matches_a_hand_computation() {
        // A: 0 0 1 1 tie; B: 0 1 1 1 tie. p_o = 4/5. A's shares (0, 1, tie) = (2, 2, 1)/5,
        // B's = (1, 3, 1)/5, so p_e = (2 + 6 + 1)/25 = 0.36 and κ = (0.8 − 0.36)/0.64 = 0.6875.
        let a = [R(0), R(0), R(1), R(1), Tie];
        let b = [R(0), R(1), R(1), R(1), Tie];
        let (p_o, k) = cohen_kappa(&a, &b);
        assert!(close(p_o, 0.8));
        assert!(close(k.unwrap(), 0.6875), "{k:?}");
        // Perfect agreement with two labels: κ = 1; systematic disagreement: κ = −1.
        assert!(close(
            cohen_kappa(&[R(0), R(1)], &[R(0), R(1)]).1.unwrap(),
            1.0
        ));
        assert!(close(
            cohen_kappa(&[R(0), R(1)], &[R(1), R(0)]).1.unwrap(),
            -1.0
        ));
        // One label used by both on every item: chance agreement is 1, κ undefined.
        assert_eq!(cohen_kappa(&[Tie, Tie], &[Tie, Tie]), (1.0, None));
    }

    #[test]
    fn fleiss_kappa_matches_a_hand_computation() {
        // Three items, three judges each: (0,0,0), (0,0,1), (1,1,tie). P_i = 1, 1/3, 1/3,
        // P̄ = 5/9; shares 0: 5/9, 1: 3/9, tie: 1/9, P_e = (25 + 9 + 1)/81 = 35/81;
        // κ = (5/9 − 35/81)/(1 − 35/81) = (10/81)/(46/81) = 10/46.
        let items = vec![
            vec![R(0), R(0), R(0)],
            vec![R(0), R(0), R(1)],
            vec![R(1), R(1), Tie],
        ];
        assert!(close(fleiss_kappa(&items).unwrap(), 10.0 / 46.0));
        // With two judges per item Fleiss' P̄ is the raw agreement.
        let two = vec![vec![R(0), R(0)], vec![R(0), R(1)]];
        // P̄ = 1/2; shares 0: 3/4, 1: 1/4, P_e = 10/16; κ = (8/16 − 10/16)/(6/16) = −1/3.
        assert!(close(fleiss_kappa(&two).unwrap(), -1.0 / 3.0));
        assert_eq!(fleiss_kappa::<Choice>(&[vec![R(0)]]), None);
    }

    #[test]
    fn measure_pairs_annotators_and_ignores_single_labels() {
        let v = |item, who: &str, c| (item, who.to_string(), c);
        let votes = vec![
            v(1, "bob", R(0)),
            v(1, "amy", R(0)),
            v(2, "amy", R(1)),
            v(2, "bob", R(0)),
            v(2, "cat", R(1)),
            v(3, "amy", BothHarmful), // judged once: not counted
        ];
        let a = measure(&votes);
        assert_eq!(a.items, 2);
        // Pairs: item 1 amy-bob agree; item 2 amy-bob no, amy-cat yes, bob-cat no: 2 of 4.
        assert!(close(a.raw.unwrap(), 0.5));
        let names: Vec<(&str, &str, usize)> = a
            .pairs
            .iter()
            .map(|p| (p.a.as_str(), p.b.as_str(), p.items))
            .collect();
        assert_eq!(
            names,
            vec![("amy", "bob", 2), ("amy", "cat", 1), ("bob", "cat", 1)]
        );
        // amy (0, 1) vs bob (0, 0): p_o = 1/2, p_e = (1/2)(1) + (1/2)(0) = 1/2, κ = 0.
        assert!(close(a.pairs[0].kappa.unwrap(), 0.0));
        assert_eq!(measure(&[]), Agreement::default());
    }
}
