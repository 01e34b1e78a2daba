//! GSM8K's answer format (Cobbe et al. 2021): a worked solution whose last line is
//! `#### <number>`. SFT teaches it, GRPO rewards it and evaluation checks it, all through this
//! one reader.

/// The final answer of a GSM8K solution or reply: the number after the last `####`, with
/// thousands separators, a dollar sign and a trailing full stop removed.
pub fn final_answer(text: &str) -> Option<String> {
    let after = &text[text.rfind("####")? + 4..];
    let token = after.split_whitespace().next()?;
    let n: String = token
        .trim_start_matches('$')
        .trim_end_matches('.')
        .chars()
        .filter(|&c| c != ',')
        .collect();
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && n.chars().any(|c| c.is_ascii_digit());
    ok.then_some(n)
}

#[cfg(test)]
mod tests {
    use super::final_answer;

    #[test]
    fn final_answers_are_read_as_gsm8k_writes_them() {
        assert_eq!(final_answer("so 48/2 = 24\n#### 72").as_deref(), Some("72"));
        assert_eq!(final_answer("#### 1,234.").as_deref(), Some("1234"));
        assert_eq!(final_answer("#### $-5").as_deref(), Some("-5"));
        assert_eq!(final_answer("#### 3 #### 4").as_deref(), Some("4"));
        assert_eq!(final_answer("the answer is 7"), None);
        assert_eq!(final_answer("#### seven"), None);
    }
}
