//! A lenient reader of the Prometheus text format, as dcgm-exporter and the model servers write it.
//!
//! dcgm-exporter renders its body with a Go template, not a Prometheus client (docs/reference/sources.md §1.1):
//! families come in any order, `# HELP`/`# TYPE` may be missing, label values are not escaped, there
//! are no timestamps. So this reader takes each sample line on its own, accepts unescaped quotes
//! where the line still parses unambiguously, and counts and skips what it cannot read, keeping
//! the first few such lines for the log. A malformed line never fails a scrape. No I/O here.
//!
//! The model servers (vLLM, SGLang: Python `prometheus_client`; TGI: Rust `metrics`; Triton:
//! `prometheus-cpp`) write escaped values; an escape (`\"`) is kept as written, which is what
//! a label matcher compares against. Names may contain `:` (`vllm:num_requests_waiting`).

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample<'a> {
    /// The metric name.
    pub name: &'a str,
    /// Label pairs in line order (values as written: dcgm-exporter does not escape them).
    pub labels: Vec<(&'a str, &'a str)>,
    /// The value.
    pub value: f64,
}

impl PromSample<'_> {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Everything read from one body.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    /// The samples that could be read.
    pub samples: Vec<PromSample<'a>>,
    /// How many non-comment, non-blank lines could not be read.
    pub malformed: usize,
    /// The first few of them (at most [`KEPT_MALFORMED`]), with their line numbers, for the log.
    pub first_malformed: Vec<(usize, String)>,
}

/// How many malformed lines are kept for the log.
pub const KEPT_MALFORMED: usize = 3;

/// Reads a whole exposition body.
pub fn parse(body: &str) -> Parsed<'_> {
    parse_with(body, |_| true)
}

/// Reads the samples of the families `keep` accepts (by metric name): other lines are skipped
/// before their labels are read, which is most of the cost of a model server's body (histogram
/// buckets, process metrics). Skipped lines are neither samples nor malformed.
pub fn parse_with(body: &str, keep: impl Fn(&str) -> bool) -> Parsed<'_> {
    let mut out = Parsed::default();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        if !keep(line[..name_end].trim_end()) {
            continue;
        }
        match sample(line) {
            Some(s) => out.samples.push(s),
            None => {
                out.malformed += 1;
                if out.first_malformed.len() < KEPT_MALFORMED {
                    out.first_malformed
                        .push((i + 1, line.chars().take(200).collect()));
                }
            }
        }
    }
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(|&c| is_name_byte(c))
}

/// One sample line: `name{labels} value [timestamp]` or `name value [timestamp]`.
fn sample(line: &str) -> Option<PromSample<'_>> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            // The label block ends at the last '}' (values are unescaped and may contain '}').
            let close = line.rfind('}')?;
            if close < open {
                return None;
            }
            (
                line[..open].trim(),
                labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let end = line.find(char::is_whitespace)?;
            (&line[..end], Vec::new(), &line[end..])
        }
    };
    if !valid_name(name) {
        return None;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional timestamp; anything more is malformed.
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return None;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(PromSample {
        name,
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end of a label name starting at `i` (no bytes consumed if there is none).
fn name_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_name_byte(b[i]) {
        i += 1;
    }
    i
}

/// `a="x",b="y"`: a value runs to a quote followed by the end of the block, or by `,` and the next
/// `name="`, so unescaped quotes and commas inside values survive. Works on bytes: this is the hot
/// loop of a 4,000-GPU scrape.
fn labels(block: &str) -> Option<Vec<(&str, &str)>> {
    let b = block.as_bytes();
    let mut out = Vec::with_capacity(16);
    let mut i = skip_ws(b, 0);
    while i < b.len() {
        let start = i;
        i = name_end(b, i);
        if i == start || b[start].is_ascii_digit() {
            return None;
        }
        let key = &block[start..i];
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let value_start = i + 1;
        let mut search = value_start;
        let value_end = loop {
            let q = search + b[search..].iter().position(|&c| c == b'"')?;
            if closes_value(b, q) {
                break q;
            }
            search = q + 1;
        };
        out.push((key, &block[value_start..value_end]));
        i = skip_ws(b, value_end + 1);
        if b.get(i) == Some(&b',') {
            i = skip_ws(b, i + 1);
        }
    }
    Some(out)
}

/// Whether the quote at `q` closes a value: the block ends after it, or `,` follows and then the
/// end or another `name="`.
fn closes_value(b: &[u8], q: usize) -> bool {
    let mut j = skip_ws(b, q + 1);
    if j >= b.len() {
        return true;
    }
    if b[j] != b',' {
        return false;
    }
    j = skip_ws(b, j + 1);
    if j >= b.len() {
        return true;
    }
    let start = j;
    j = name_end(b, j);
    if j == start {
        return false;
    }
    j = skip_ws(b, j);
    if b.get(j) != Some(&b'=') {
        return false;
    }
    j = skip_ws(b, j + 1);
    b.get(j) == Some(&b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_and_without_labels_help_or_type() {
        let body = "# HELP X help\n# TYPE X gauge\nX{gpu=\"0\",UUID=\"GPU-1\"} 87\nBARE 0\nTS{a=\"b\"} 1.5 1700000000000\n\n";
        let p = parse(body);
        assert_eq!(p.malformed, 0);
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[0].label("UUID"), Some("GPU-1"));
        assert_eq!(
            p.samples[1],
            PromSample {
                name: "BARE",
                labels: vec![],
                value: 0.0
            }
        );
        assert_eq!(p.samples[2].value, 1.5);
    }

    #[test]
    fn unescaped_label_values_survive() {
        let p = parse("M{modelName=\"NVIDIA \"H100\", 80GB\",pod=\"p-1\"} 3\n");
        assert_eq!(p.malformed, 0, "{:?}", p.first_malformed);
        assert_eq!(
            p.samples[0].label("modelName"),
            Some("NVIDIA \"H100\", 80GB")
        );
        assert_eq!(p.samples[0].label("pod"), Some("p-1"));
    }

    #[test]
    fn only_the_families_kept_are_read() {
        let body = "A{x=\"1\"} 1\nB_bucket{le=\"1\"} 2\nB_bucket{le=\"+Inf\" 3\nA 4\nbroken\n";
        let p = parse_with(body, |name| name == "A");
        assert_eq!(
            p.samples.iter().map(|s| s.value).collect::<Vec<_>>(),
            vec![1.0, 4.0]
        );
        assert_eq!(
            p.malformed, 0,
            "lines of other families are not read at all"
        );
        assert_eq!(parse(body).malformed, 2);
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped() {
        let body =
            "GOOD 1\nno value here\nBAD{a=\"b\" 1\n9bad 1\nGOOD2{a=\"b\"} notanumber\nGOOD3 2\n";
        let p = parse(body);
        assert_eq!(
            p.samples.iter().map(|s| s.name).collect::<Vec<_>>(),
            vec!["GOOD", "GOOD3"]
        );
        assert_eq!(p.malformed, 4);
        assert_eq!(p.first_malformed.len(), KEPT_MALFORMED);
        assert_eq!(p.first_malformed[0].0, 2, "line numbers are 1-based");
    }

    #[test]
    fn reads_every_fixture_without_losing_a_sample_line() {
        for (name, body) in [
            (
                "synthetic-4.8-k8s-mig.prom",
                include_str!("../../../tests/fixtures/synthetic-4.8-k8s-mig.prom"),
            ),
            (
                "datadog-dcgm-metrics.txt",
                include_str!("../../../tests/fixtures/datadog-dcgm-metrics.txt"),
            ),
        ] {
            let p = parse(body);
            let sample_lines = body
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .count();
            assert_eq!(p.malformed, 0, "{name}: {:?}", p.first_malformed);
            assert_eq!(p.samples.len(), sample_lines, "{name}");
        }
    }
}
