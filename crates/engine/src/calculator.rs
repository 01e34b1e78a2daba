//! The calculator tool: a small arithmetic evaluator of our own. The model's text is parsed,
//! never executed: numbers, + - * / // % ** ^, parentheses and unary signs, with limits on
//! length, nesting and magnitude, so no input can hang or crash the engine.

/// Longest expression evaluated, in bytes.
pub const MAX_LEN: usize = 200;
const MAX_DEPTH: usize = 32;

/// Evaluates `expr` and formats the result as the tool's answer: integers without a decimal
/// point, other values to at most 6 decimals. `Err` carries a short reason the model sees.
pub fn evaluate(expr: &str) -> Result<String, String> {
    let v = eval_f64(expr)?;
    Ok(format_number(v))
}

/// The value of `expr`.
pub fn eval_f64(expr: &str) -> Result<f64, String> {
    if expr.len() > MAX_LEN {
        return Err("expression too long".into());
    }
    let tokens = lex(expr)?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        depth: 0,
    };
    let v = p.sum()?;
    if p.pos != tokens.len() {
        return Err(format!("unexpected {:?}", tokens[p.pos]));
    }
    if !v.is_finite() {
        return Err("result is not a finite number".into());
    }
    Ok(v)
}

pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Op(char),
    /// `**` (power) and `//` (floor division).
    Pow,
    FloorDiv,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            ' ' | '\t' | '\n' | '$' => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                // Thousands separators ("1,000") are common in the data; dropped.
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b',') {
                    i += 1;
                }
                let text: String = s[start..i].chars().filter(|&c| c != ',').collect();
                let v: f64 = text
                    .parse()
                    .map_err(|_| format!("bad number {:?}", &s[start..i]))?;
                out.push(Tok::Num(v));
            }
            '*' if b.get(i + 1) == Some(&b'*') => {
                out.push(Tok::Pow);
                i += 2;
            }
            '/' if b.get(i + 1) == Some(&b'/') => {
                out.push(Tok::FloorDiv);
                i += 2;
            }
            '^' => {
                out.push(Tok::Pow);
                i += 1;
            }
            '+' | '-' | '*' | '/' | '%' | 'x' => {
                out.push(Tok::Op(if c == 'x' { '*' } else { c }));
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(format!("unsupported character {ch:?}"));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [Tok],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Tok> {
        self.tokens.get(self.pos).copied()
    }

    // sum := product (('+' | '-') product)*
    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        while let Some(Tok::Op(op @ ('+' | '-'))) = self.peek() {
            self.pos += 1;
            let r = self.product()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }

    // product := unary (('*' | '/' | '//' | '%') unary)*
    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ('*' | '/' | '%'))) => op,
                Some(Tok::FloorDiv) => 'f',
                _ => return Ok(v),
            };
            self.pos += 1;
            let r = self.unary()?;
            if op != '*' && r == 0.0 {
                return Err("division by zero".into());
            }
            v = match op {
                '*' => v * r,
                '/' => v / r,
                'f' => (v / r).floor(),
                _ => v - r * (v / r).floor(), // Python's modulo: the sign of the divisor
            };
        }
    }

    // unary := ('+' | '-') unary | power
    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(Tok::Op('-')) => {
                self.pos += 1;
                self.nest(|p| p.unary()).map(|v| -v)
            }
            Some(Tok::Op('+')) => {
                self.pos += 1;
                self.nest(|p| p.unary())
            }
            _ => self.power(),
        }
    }

    // power := atom ('**' unary)?   (right-associative, binds tighter than unary minus on its left)
    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.peek() == Some(Tok::Pow) {
            self.pos += 1;
            let exp = self.nest(|p| p.unary())?;
            if exp.abs() > 1024.0 {
                return Err("exponent too large".into());
            }
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(Tok::Num(v)) => {
                self.pos += 1;
                Ok(v)
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let v = self.nest(|p| p.sum())?;
                if self.peek() != Some(Tok::Close) {
                    return Err("missing ')'".into());
                }
                self.pos += 1;
                Ok(v)
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("incomplete expression".into()),
        }
    }

    fn nest(&mut self, f: impl FnOnce(&mut Self) -> Result<f64, String>) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let v = f(self);
        self.depth -= 1;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let ok = |e: &str| evaluate(e).unwrap();
        assert_eq!(ok("48/2"), "24");
        assert_eq!(ok("1 + 2 * 3"), "7");
        assert_eq!(ok("(1 + 2) * 3"), "9");
        assert_eq!(ok("2**3**2"), "512");
        assert_eq!(ok("-2**2"), "-4");
        assert_eq!(ok("12/60"), "0.2");
        assert_eq!(ok("1/3"), "0.333333");
        assert_eq!(ok("7 // 2"), "3");
        assert_eq!(ok("-7 % 3"), "2");
        assert_eq!(ok("$1,200 x 3"), "3600");
        assert_eq!(ok("0.1+0.2"), "0.3");
        assert_eq!(ok("--5"), "5");
    }

    #[test]
    fn refuses_safely() {
        for bad in [
            "",
            "1/0",
            "2**5000",
            "import os",
            "1 +",
            "(1",
            "1)",
            "1..2",
            "__import__('os')",
            "9**9**9",
        ] {
            assert!(evaluate(bad).is_err(), "{bad:?} should fail");
        }
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert!(evaluate(&deep).is_err());
        assert!(evaluate(&"1+".repeat(150)).is_err());
        assert!(evaluate(&"-".repeat(190)).is_err());
    }
}
