//! A lenient reader of the Prometheus text format as dcgm-exporter writes it.
//!
//! dcgm-exporter renders its body with a Go template, not a Prometheus client (sources.md §1.1):
//! families come in any order, `# HELP`/`# TYPE` may be missing, label values are not escaped, there
//! are no timestamps. So this reader takes each sample line on its own, accepts unescaped quotes
//! where the line still parses unambiguously, and counts and skips what it cannot read, keeping
//! the first few such lines for the log. A malformed line never fails a scrape. No I/O here.

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
    let mut out = Parsed::default();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
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

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
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

/// `a="x",b="y"`: a value runs to the next `",` followed by a label name and `=`, or to the end,
/// so unescaped quotes and commas inside values survive.
fn labels(block: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut rest = block.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        if !valid_name(key) {
            return None;
        }
        let after = rest[eq + 1..].trim_start();
        let after = after.strip_prefix('"')?;
        let end = value_end(after)?;
        out.push((key, &after[..end]));
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// Where the closing quote of a value is: the last quote of the block, or a quote followed by
/// `,` and the next `name=`.
fn value_end(s: &str) -> Option<usize> {
    let mut search = 0;
    while let Some(pos) = s[search..].find('"') {
        let q = search + pos;
        let tail = s[q + 1..].trim_start();
        if tail.is_empty() {
            return Some(q);
        }
        if let Some(next) = tail.strip_prefix(',') {
            let next = next.trim_start();
            if next.is_empty() {
                return Some(q);
            }
            if let Some(eq) = next.find('=')
                && valid_name(next[..eq].trim())
                && next[eq + 1..].trim_start().starts_with('"')
            {
                return Some(q);
            }
        }
        search = q + 1;
    }
    None
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
