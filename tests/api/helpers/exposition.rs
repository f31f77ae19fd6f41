//! A small reader for the Prometheus text exposition: samples, labels, sums.

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, suffix included (`_total`, `_bucket`, ...).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of one label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every given label has the given value.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// Every sample of a text exposition (0.0.4 or OpenMetrics); panics on a malformed line.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("malformed sample line {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of every sample called `name` that has these labels (0 when there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name && s.has(labels))
        .map(|s| s.value)
        .sum()
}

/// The value of the one unlabelled sample called `name`; panics when absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    let found: Vec<_> = samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one `{name}` sample, found {found:?} in:\n{text}"
    );
    found[0].value
}

#[test]
fn the_exposition_reader_reads_labels_and_special_values() {
    let text = "# HELP x y\n\
                a 1\n\
                b_total{route=\"/logs\",status=\"200\"} 3 1700000000000\n\
                c_bucket{le=\"+Inf\",q=\"a\\\"b\"} +Inf\n";
    let all = samples(text);
    assert_eq!(all.len(), 3);
    assert_eq!(metric_value(text, "a"), 1.0);
    assert_eq!(metric_sum(text, "b_total", &[("status", "200")]), 3.0);
    assert_eq!(metric_sum(text, "b_total", &[("status", "400")]), 0.0);
    assert_eq!(all[2].label("q"), Some("a\"b"));
    assert!(all[2].value.is_infinite());
}
