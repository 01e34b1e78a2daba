//! A judgement: the preferred response, a tie, or all responses harmful.

/// An annotator's judgement of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Choice {
    /// The response at this position is preferred.
    Response(usize),
    Tie,
    /// Every response is harmful; none is preferred.
    BothHarmful,
}

impl Choice {
    /// The stored form: "0", "1", ..., "tie", "both_harmful".
    pub fn label(&self) -> String {
        match self {
            Choice::Response(i) => i.to_string(),
            Choice::Tie => "tie".into(),
            Choice::BothHarmful => "both_harmful".into(),
        }
    }

    pub fn from_label(s: &str) -> Option<Choice> {
        match s {
            "tie" => Some(Choice::Tie),
            "both_harmful" => Some(Choice::BothHarmful),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok().map(Choice::Response)
            }
            _ => None,
        }
    }

    /// A request's choice: a response index (number) or "tie" / "both_harmful".
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Choice, String> {
        match v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(|i| Choice::Response(i as usize))
                .ok_or_else(|| format!("choice {n} is not a response index (0, 1, ...)")),
            serde_json::Value::String(s) if s == "tie" || s == "both_harmful" => {
                Ok(Choice::from_label(s).expect("a known label"))
            }
            other => Err(format!(
                "choice {other} is none of: a response index, \"tie\", \"both_harmful\""
            )),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Choice::Response(i) => serde_json::json!(i),
            other => serde_json::json!(other.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_from_requests_and_labels() {
        use serde_json::json;
        assert_eq!(Choice::from_json(&json!(1)), Ok(Choice::Response(1)));
        assert_eq!(Choice::from_json(&json!("tie")), Ok(Choice::Tie));
        assert_eq!(
            Choice::from_json(&json!("both_harmful")),
            Ok(Choice::BothHarmful)
        );
        for bad in [
            json!(-1),
            json!(1.5),
            json!("1"),
            json!("maybe"),
            json!(null),
        ] {
            assert!(Choice::from_json(&bad).is_err(), "{bad}");
        }
        for c in [
            Choice::Response(0),
            Choice::Response(12),
            Choice::Tie,
            Choice::BothHarmful,
        ] {
            assert_eq!(Choice::from_label(&c.label()), Some(c));
            assert_eq!(Choice::from_json(&c.to_json()), Ok(c));
        }
        assert_eq!(Choice::from_label("1x"), None);
        assert_eq!(Choice::from_label(""), None);
    }
}
