//! A reader for the common subset of JSON, for the request path's two OIP v2 shapes (the
//! request to validate, the backend's answer to read a prediction from) without serde's
//! machinery: serde_json's derive and `Value` paths cost ~5,000 instructions for a 110-byte
//! answer (BENCHMARKS.md, "Proxy cost").
//!
//! It answers `None` for whatever it does not take on, and its callers then go to serde_json,
//! which also words the errors: strings with escapes or control characters, numbers that could
//! leave `f64`'s range (over 100 characters, or an exponent of three digits), nesting deeper than
//! [`MAX_DEPTH`], and anything that is not JSON. So what it accepts, serde_json accepts and
//! reads the same way.

/// Deepest nesting taken on (serde_json refuses past 128).
pub const MAX_DEPTH: u32 = 100;

/// Longest number token taken on: with at most two exponent digits, nothing this long leaves
/// `f64`'s range.
const MAX_NUMBER_LEN: usize = 100;

/// The bytes a string's fast scan stops at: its closing quote, an escape, a control character.
static STRING_STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        stops[c] = true;
        c += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// What a JSON value's scalars are, nested arrays flattened (the counts an OIP tensor's
/// `data` is checked by).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leaves {
    pub numbers: u64,
    pub strings: u64,
    pub bools: u64,
    /// Objects and nulls.
    pub other: u64,
}

impl Leaves {
    pub fn total(&self) -> u64 {
        self.numbers + self.strings + self.bools + self.other
    }

    pub fn add(&mut self, o: Leaves) {
        self.numbers += o.numbers;
        self.strings += o.strings;
        self.bools += o.bools;
        self.other += o.other;
    }
}

/// One scalar of a value, as [`Scanner::leaves`] meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf<'a> {
    /// The number's text, checked against JSON's grammar.
    Number(&'a str),
    /// The string's contents (never with escapes).
    String(&'a str),
    Bool(bool),
    Null,
    /// An object (read and checked, not looked into).
    Object,
}

/// A cursor over JSON text. Every reading method leaves the cursor after what it read and
/// returns `None` for text outside the subset it takes (see the module's doc).
#[derive(Debug)]
pub struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        match self.bytes.get(self.at) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => self.skip_space(),
            next => next.copied(),
        }
    }

    /// [`Scanner::peek`] past whitespace: out of line, as are the other loops over bytes,
    /// which inlined into their callers compiled to several times the instructions per byte.
    #[inline(never)]
    fn skip_space(&mut self) -> Option<u8> {
        let rest = self.bytes.get(self.at..)?;
        let n = rest
            .iter()
            .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
        self.at += n;
        rest.get(n).copied()
    }

    /// Consumes `c` if it comes next.
    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        let next = self.peek() == Some(c);
        if next {
            self.at += 1;
        }
        next
    }

    /// Where the cursor is, as a byte offset of the text.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// A string without escapes or control characters.
    #[inline(never)]
    pub fn string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        let rest = self.bytes.get(start..)?;
        let len = rest.iter().position(|&c| STRING_STOPS[usize::from(c)])?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // The quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..start + len)
    }

    /// A number's text, checked against JSON's grammar.
    #[inline(never)]
    pub fn number(&mut self) -> Option<&'a str> {
        self.peek()?;
        let b = self.bytes;
        let start = self.at;
        let mut i = start;
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        // No leading zeros: `0` alone or a digit 1-9 first.
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i + 1),
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i || end - i > 2 {
                return None;
            }
            i = end;
        }
        if i - start > MAX_NUMBER_LEN {
            return None;
        }
        self.at = i;
        self.text.get(start..i)
    }

    /// A non-negative integer that fits 18 digits.
    pub fn count(&mut self) -> Option<u64> {
        let text = self.number()?;
        if text.len() > 18 || !text.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.peek()?;
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// An object, `field` called with each key and the cursor at its value, which `field`
    /// must read.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.sequence(b'{', b'}', |s| {
            let key = s.string()?;
            if !s.eat(b':') {
                return None;
            }
            field(s, key)
        })
    }

    /// An array, `item` called with the cursor at each element, which `item` must read.
    pub fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b'[', b']', item)
    }

    /// `open`, comma-separated items (none or more), `close`: an object's or an array's frame.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(open) {
            return None;
        }
        self.enter()?;
        if !self.eat(close) {
            loop {
                item(self)?;
                if self.eat(close) {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Any value, `leaf` called with each scalar (and each object) in order, arrays
    /// flattened.
    pub fn leaves(&mut self, leaf: &mut impl FnMut(Leaf<'a>)) -> Option<()> {
        match self.peek()? {
            b'[' => self.array(|s| s.leaves(leaf)),
            b'{' => {
                self.object(|s, _| s.skip())?;
                leaf(Leaf::Object);
                Some(())
            }
            b'"' => {
                leaf(Leaf::String(self.string()?));
                Some(())
            }
            b't' => {
                self.literal("true")?;
                leaf(Leaf::Bool(true));
                Some(())
            }
            b'f' => {
                self.literal("false")?;
                leaf(Leaf::Bool(false));
                Some(())
            }
            b'n' => {
                self.literal("null")?;
                leaf(Leaf::Null);
                Some(())
            }
            _ => {
                leaf(Leaf::Number(self.number()?));
                Some(())
            }
        }
    }

    /// Any value, checked and passed over.
    pub fn skip(&mut self) -> Option<()> {
        self.leaves(&mut |_| ())
    }

    /// The counts of a value's scalars (see [`Leaves`]).
    pub fn count_leaves(&mut self) -> Option<Leaves> {
        let mut n = Leaves::default();
        self.leaves(&mut |l| match l {
            Leaf::Number(_) => n.numbers += 1,
            Leaf::String(_) => n.strings += 1,
            Leaf::Bool(_) => n.bools += 1,
            Leaf::Null | Leaf::Object => n.other += 1,
        })?;
        Some(n)
    }
}

/// Sets `seen`, `None` when it was set already (a key given twice, which serde's derived
/// readers refuse for the fields they know).
pub fn first(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(text: &str) -> bool {
        let mut s = Scanner::new(text);
        s.skip().is_some() && s.at_end()
    }

    #[test]
    fn what_it_takes_serde_json_reads() {
        for text in [
            "{}",
            "[]",
            " { \"a\" : [1, -2.5e-3, 0, 0.0, true, false, null, \"x\", {\"b\": {}}] } ",
            "[[[[]]]]",
            "-0",
            "1E+10",
        ] {
            assert!(skips(text), "{text}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn what_is_not_json_or_not_taken_on_is_refused() {
        for text in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e400",
            "+1",
            "tru",
            "nul",
            "{\"a\":1}}",
            "\"tab\there\"",
            // Outside the subset, though JSON: escapes and very long numbers.
            "\"a\\\"b\"",
            "{\"\\u0061\":1}",
            &"1".repeat(101),
        ] {
            assert!(!skips(text), "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert!(!skips(&deep));
        let within = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(skips(&within));
    }

    #[test]
    fn leaves_are_counted_with_arrays_flattened() {
        let mut s = Scanner::new(r#"[[1, 2.5], ["a", true], [null, {"k": [1]}]]"#);
        let n = s.count_leaves().unwrap();
        assert_eq!(
            n,
            Leaves {
                numbers: 2,
                strings: 1,
                bools: 1,
                other: 2
            }
        );
    }

    #[test]
    fn counts_are_plain_integers_only() {
        for (text, want) in [
            ("0", Some(0)),
            ("18", Some(18)),
            ("-1", None),
            ("1.0", None),
        ] {
            assert_eq!(Scanner::new(text).count(), want, "{text}");
        }
        assert_eq!(Scanner::new(&"9".repeat(19)).count(), None);
    }
}
