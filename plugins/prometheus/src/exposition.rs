//! Reading the Prometheus text exposition format, and the series selectors
//! that sum a page's samples into a `queue.metrics` payload.
//!
//! The parser is written here rather than taken from `prometheus-parse`
//! (0.2.5): that crate splits label pairs on `,` and `=` without honouring
//! quotes or escapes (so `path="/a,b"` or `q="x=1"` come out wrong and `\"`
//! is never unescaped), skips metric names containing `:` (recording-rule
//! names), and folds histogram `le` and summary `quantile` series into
//! aggregate values, so a selector on such a series could not match it.
//! The grammar is small (see
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>).

use std::fmt;

use serde_json::{Map, Value};

/// One sample line of an exposition page.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The metric name.
    pub name: String,
    /// Label pairs in page order.
    pub labels: Vec<(String, String)>,
    /// The sample value.
    pub value: f64,
}

impl Series {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A parsed page: its samples and how many lines could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// Every sample line, in order.
    pub series: Vec<Series>,
    /// Lines that were neither comments, blank, nor valid samples (skipped).
    pub bad_lines: usize,
}

/// Parses a text exposition page. Comments (`# HELP`, `# TYPE`, others)
/// and blank lines are skipped; a malformed line is skipped and counted.
pub fn parse_page(text: &str) -> Page {
    let mut page = Page::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_sample(line) {
            Some(series) => page.series.push(series),
            None => page.bad_lines += 1,
        }
    }
    page
}

fn parse_sample(line: &str) -> Option<Series> {
    let mut cur = Cursor::new(line);
    let name = cur.name()?;
    cur.skip_blank();
    let labels = if cur.eat('{') {
        cur.label_list(&['='])?
            .into_iter()
            .map(|(n, _, v)| (n, v))
            .collect()
    } else {
        Vec::new()
    };
    cur.skip_blank();
    let mut rest = cur.rest().split_ascii_whitespace();
    let value = parse_float(rest.next()?)?;
    // An optional timestamp (milliseconds) may follow; anything more is bad.
    if let Some(ts) = rest.next() {
        ts.parse::<i64>().ok()?;
    }
    if rest.next().is_some() {
        return None;
    }
    Some(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Go's float syntax as Prometheus writes it (`NaN`, `+Inf`, `-Inf`, `1e3`…).
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t if t
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            t.parse().ok()
        }
        _ => None,
    }
}

/// A series selector: `name` or `name{label="v", other!="w"}`.
#[derive(Clone, PartialEq)]
pub struct Selector {
    name: String,
    matchers: Vec<(String, bool, String)>,
    text: String,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({})", self.text)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Selector {
    /// Parses a selector. Label values are double-quoted strings with
    /// `\\`, `\"` and `\n` escapes; the operators are `=` and `!=`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a series selector: write a metric name, optionally followed \
                 by label matchers such as queue_pending{{queue=\"a\"}} (operators = and !=, \
                 values in double quotes)"
            )
        };
        let mut cur = Cursor::new(text);
        let name = cur.name().ok_or_else(bad)?.to_owned();
        cur.skip_blank();
        let mut matchers = Vec::new();
        if cur.eat('{') {
            for (label, op, value) in cur.label_list(&['=', '!']).ok_or_else(bad)? {
                matchers.push((label, op == '=', value));
            }
        }
        cur.skip_blank();
        if !cur.rest().is_empty() {
            return Err(bad());
        }
        Ok(Selector {
            name,
            matchers,
            text: text.to_owned(),
        })
    }

    /// Whether `series` matches: same name, and each matcher holds (a label
    /// the series lacks counts as the empty string, as in PromQL).
    pub fn matches(&self, series: &Series) -> bool {
        series.name == self.name
            && self
                .matchers
                .iter()
                .all(|(label, eq, value)| (series.label(label) == value) == *eq)
    }

    /// The sum of every matching series, or `None` when none matches.
    pub fn sum(&self, page: &Page) -> Option<f64> {
        page.series
            .iter()
            .filter(|s| self.matches(s))
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }
}

/// The `queue.metrics` payload for `page`: each configured field that
/// matched at least one series, with a finite sum.
pub fn queue_metrics(metrics: &[(&'static str, Selector)], page: &Page) -> Map<String, Value> {
    let mut payload = Map::new();
    for (field, selector) in metrics {
        if let Some(sum) = selector.sum(page).filter(|v| v.is_finite()) {
            if let Some(n) = serde_json::Number::from_f64(sum) {
                payload.insert((*field).to_owned(), Value::Number(n));
            }
        }
    }
    payload
}

/// A tiny hand cursor over one line.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// A metric name `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    fn name(&mut self) -> Option<&'a str> {
        self.ident(true)
    }

    /// A name; `colon` allows `:` (metric names, not label names).
    fn ident(&mut self, colon: bool) -> Option<&'a str> {
        let start = self.pos;
        for (i, c) in self.rest().char_indices() {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (colon && c == ':')
                || (i > 0 && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos = start + i + 1;
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    /// `label OP "value", …}` after the `{`: `ops` lists the allowed first
    /// characters of an operator (`=`, or `!` for `!=`). Returns
    /// `(label, '=' or '!', value)` triples; a trailing comma is allowed.
    fn label_list(&mut self, ops: &[char]) -> Option<Vec<(String, char, String)>> {
        let mut out = Vec::new();
        loop {
            self.skip_blank();
            if self.eat('}') {
                return Some(out);
            }
            let label = self.ident(false)?.to_owned();
            self.skip_blank();
            let op = self.peek()?;
            if !ops.contains(&op) {
                return None;
            }
            self.pos += 1;
            if op == '!' && !self.eat('=') {
                return None;
            }
            self.skip_blank();
            let value = self.quoted()?;
            out.push((label, op, value));
            self.skip_blank();
            if !self.eat(',') {
                self.skip_blank();
                return self.eat('}').then_some(out);
            }
        }
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes.
    fn quoted(&mut self) -> Option<String> {
        if !self.eat('"') {
            return None;
        }
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Some(out);
                }
                '\\' => match chars.next()?.1 {
                    'n' => out.push('\n'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                },
                c => out.push(c),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP queue_pending Items waiting.
# TYPE queue_pending gauge
queue_pending{queue="a"} 3
queue_pending{queue="b",shard="1"} 4 1700000000000
queue_pending_total 100
# a free comment
job:queue_pending:sum 7

queue_wait_ms{queue="a",path="/x,y=z",note="say \"hi\"\\n"} 1.5e2
queue_wait_ms { queue = "b" , } 50
http_duration_seconds_bucket{le="0.5"} 12
http_duration_seconds_bucket{le="+Inf"} 20
weird NaN
broken{queue="a" 3
also broken 1 2 3
"#;

    #[test]
    fn parses_samples_labels_and_escapes() {
        let page = parse_page(PAGE);
        assert_eq!(page.bad_lines, 2, "{page:?}");
        assert_eq!(page.series.len(), 9);
        assert_eq!(
            page.series[0],
            Series {
                name: "queue_pending".into(),
                labels: vec![("queue".into(), "a".into())],
                value: 3.0
            }
        );
        assert_eq!(page.series[1].labels.len(), 2);
        assert_eq!(page.series[3].name, "job:queue_pending:sum");
        let wait = &page.series[4];
        assert_eq!(wait.value, 150.0);
        assert_eq!(wait.label("path"), "/x,y=z");
        assert_eq!(wait.label("note"), "say \"hi\"\\n");
        assert_eq!(page.series[5].label("queue"), "b");
        assert_eq!(page.series[7].label("le"), "+Inf");
        assert!(page.series[8].value.is_nan());
    }

    #[test]
    fn selectors_parse_and_refuse() {
        for ok in [
            "queue_pending",
            "job:x:sum",
            "queue_pending{}",
            "queue_pending{queue=\"a\"}",
            " queue_pending { queue = \"a\", shard != \"2\", } ",
        ] {
            Selector::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "{queue=\"a\"}",
            "queue_pending{queue=a}",
            "queue_pending{queue=~\"a.*\"}",
            "queue_pending{queue=\"a\"",
            "queue_pending extra",
            "1abc",
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.contains("selector"), "{bad}: {e}");
        }
    }

    #[test]
    fn matching_series_are_summed() {
        let page = parse_page(PAGE);
        let sum = |s: &str| Selector::parse(s).unwrap().sum(&page);
        assert_eq!(sum("queue_pending"), Some(7.0));
        assert_eq!(sum("queue_pending{queue=\"b\"}"), Some(4.0));
        assert_eq!(sum("queue_pending{queue!=\"b\"}"), Some(3.0));
        // A label the series lacks is "" (PromQL semantics).
        assert_eq!(sum("queue_pending{shard=\"\"}"), Some(3.0));
        assert_eq!(sum("queue_pending{queue=\"c\"}"), None);
        assert_eq!(sum("queue_pending_total"), Some(100.0));
        assert_eq!(sum("queue_wait_ms"), Some(200.0));
        assert_eq!(sum("queue_wait_ms{path=\"/x,y=z\"}"), Some(150.0));
        assert_eq!(sum("http_duration_seconds_bucket{le=\"0.5\"}"), Some(12.0));
        assert_eq!(sum("nothing_here"), None);
    }

    #[test]
    fn payload_leaves_unmatched_and_non_finite_fields_out() {
        let page = parse_page(PAGE);
        let metrics = vec![
            ("pending", Selector::parse("queue_pending").unwrap()),
            ("processing", Selector::parse("absent_metric").unwrap()),
            ("pending_batches", Selector::parse("weird").unwrap()),
            (
                "avg_wait_time_ms",
                Selector::parse("queue_wait_ms{queue=\"a\"}").unwrap(),
            ),
        ];
        let payload = queue_metrics(&metrics, &page);
        assert_eq!(
            Value::Object(payload),
            serde_json::json!({"pending": 7.0, "avg_wait_time_ms": 150.0})
        );
    }
}
