//! Keeps the operator-facing observability files honest against `meshgroup::metrics::CATALOGUE`:
//! the Grafana dashboards (`grafana/dashboards/*.json`), the alerting rules (`grafana/alerts/*.yaml`)
//! and `docs/metrics.md`. No network, no external tools; `tests/promtool.sh` and
//! `tests/prometheus_scrape.sh` cover the rest with the real Prometheus binaries.

use std::collections::BTreeSet;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use meshgroup::metrics::{CATALOGUE, Kind, MetricDef};
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const DS_UID: &str = "${DS_PROMETHEUS}";
const PREFIX: &str = "meshgroup_";
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];
const FORBIDDEN_LABELS: &[&str] = &["member", "identity", "member_hash"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` (relative to the crate root) whose names end with `ext`, sorted.
fn files_with_ext(dir: &str, ext: &str) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join(dir))? {
        let path = entry?.path();
        if path.is_file() && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(ext)) {
            out.push(path);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(format!("no *{ext} files in {dir}").into());
    }
    Ok(out)
}

fn dashboards() -> Result<Vec<(PathBuf, Value)>, Box<dyn Error>> {
    files_with_ext("grafana/dashboards", ".json")?
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p)?;
            let json: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((p, json))
        })
        .collect()
}

fn alert_files() -> Result<Vec<(PathBuf, String)>, Box<dyn Error>> {
    files_with_ext("grafana/alerts", ".yaml")?
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p)?;
            Ok((p, text))
        })
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// Every `meshgroup_[a-z0-9_]+` token in `text` that is not the tail of a longer identifier.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(PREFIX) {
        let before = rest[..i].chars().next_back().or(if i == 0 { prev } else { None });
        let tail = &rest[i + PREFIX.len()..];
        let len = tail.find(|c: char| !is_name_char(c)).unwrap_or(tail.len());
        let bounded = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if bounded && len > 0 {
            out.push(format!("{PREFIX}{}", &tail[..len]));
        }
        let consumed = i + PREFIX.len() + len;
        prev = rest[..consumed].chars().next_back();
        rest = &rest[consumed..];
    }
    out
}

/// The values of every `expr:` key in a YAML text: inline, or a block scalar (`|`, `>`, ...) made of
/// the following lines indented deeper than the key. A small scanner; no YAML crate needed.
fn yaml_exprs(text: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let key_indent = indent(line);
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > key_indent) {
                block.push(lines[i].trim());
                i += 1;
            }
            out.push(block.join("\n"));
        } else {
            out.push(value.to_owned());
        }
    }
    out
}

fn catalogued(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// Whether `name` is a series the exporter emits: a counter or gauge by its name, a histogram only
/// through its `_bucket`, `_sum` and `_count` series.
fn check_series_name(name: &str) -> Result<(), String> {
    if let Some(m) = catalogued(name) {
        return match m.kind {
            Kind::Histogram => Err(format!("{name} is a histogram; query {name}_bucket, _sum or _count")),
            _ => Ok(()),
        };
    }
    for suffix in HISTOGRAM_SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix) {
            return match catalogued(base) {
                Some(m) if m.kind == Kind::Histogram => Ok(()),
                Some(_) => Err(format!("{name}: {base} is not a histogram, it has no {suffix} series")),
                None => Err(format!("{name}: {base} is not in CATALOGUE")),
            };
        }
    }
    Err(format!("{name} is not in CATALOGUE"))
}

fn finish(problems: Vec<String>) -> TestResult {
    if problems.is_empty() { Ok(()) } else { Err(format!("{} problem(s):\n  {}", problems.len(), problems.join("\n  ")).into()) }
}

fn short(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// All panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(list) = dashboard.get("panels") {
        walk(list, &mut out);
    }
    out
}

fn templating(dashboard: &Value) -> Vec<&Value> {
    dashboard.pointer("/templating/list").and_then(Value::as_array).map(|l| l.iter().collect()).unwrap_or_default()
}

fn check_datasource(where_: &str, ds: Option<&Value>, problems: &mut Vec<String>) {
    let uid = ds.and_then(|d| d.get("uid")).and_then(Value::as_str);
    let kind = ds.and_then(|d| d.get("type")).and_then(Value::as_str);
    if uid != Some(DS_UID) || kind != Some("prometheus") {
        problems.push(format!("{where_}: datasource must be {{\"type\":\"prometheus\",\"uid\":\"{DS_UID}\"}}, got {ds:?}"));
    }
}

fn is_stable_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The PromQL text a dashboard queries: target exprs and query-variable definitions.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p.get("targets").and_then(Value::as_array).into_iter().flatten() {
            if let Some(e) = t.get("expr").and_then(Value::as_str) {
                out.push(e.to_owned());
            }
        }
    }
    for v in templating(dashboard) {
        if let Some(q) = v.get("query").and_then(Value::as_str) {
            out.push(q.to_owned());
        }
        if let Some(q) = v.pointer("/query/query").and_then(Value::as_str) {
            out.push(q.to_owned());
        }
        if let Some(q) = v.get("definition").and_then(Value::as_str) {
            out.push(q.to_owned());
        }
    }
    out
}

#[test]
fn dashboards_are_provisionable() -> TestResult {
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for (path, d) in dashboards()? {
        let f = short(&path);
        if d.get("id") != Some(&Value::Null) {
            problems.push(format!("{f}: \"id\" must be null, got {:?}", d.get("id")));
        }
        match d.get("uid").and_then(Value::as_str) {
            Some(uid) if is_stable_uid(uid) => {
                if !uids.insert(uid.to_owned()) {
                    problems.push(format!("{f}: uid {uid} is used by another dashboard"));
                }
            }
            other => problems.push(format!("{f}: uid must match ^[a-z0-9-]+$, got {other:?}")),
        }
        if d.get("__inputs").is_some() {
            problems.push(format!("{f}: __inputs is only resolved on UI import; use the DS_PROMETHEUS variable"));
        }
        let vars = templating(&d);
        let ds_var = vars.iter().find(|v| v.get("name").and_then(Value::as_str) == Some("DS_PROMETHEUS"));
        match ds_var {
            Some(v) if v.get("type").and_then(Value::as_str) == Some("datasource") && v.get("query").and_then(Value::as_str) == Some("prometheus") => {}
            other => problems.push(format!("{f}: needs a templating variable DS_PROMETHEUS of type datasource, query prometheus; got {other:?}")),
        }
        for v in &vars {
            if v.get("type").and_then(Value::as_str) == Some("query") {
                let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
                check_datasource(&format!("{f}: variable {name}"), v.get("datasource"), &mut problems);
            }
        }
        let all = panels(&d);
        if all.iter().all(|p| p.get("targets").is_none()) {
            problems.push(format!("{f}: no panel has targets"));
        }
        for p in all {
            let title = p.get("title").and_then(Value::as_str).unwrap_or("?");
            check_datasource(&format!("{f}: panel {title:?}"), p.get("datasource"), &mut problems);
            for t in p.get("targets").and_then(Value::as_array).into_iter().flatten() {
                let r = t.get("refId").and_then(Value::as_str).unwrap_or("?");
                check_datasource(&format!("{f}: panel {title:?} target {r}"), t.get("datasource"), &mut problems);
                if t.get("expr").and_then(Value::as_str).is_none_or(|e| e.trim().is_empty()) {
                    problems.push(format!("{f}: panel {title:?} target {r} has no expr"));
                }
            }
        }
    }
    for uid in ["meshgroup-overview", "meshgroup-group"] {
        if !uids.contains(uid) {
            problems.push(format!("no dashboard has uid {uid}"));
        }
    }
    finish(problems)
}

#[test]
fn group_dashboard_filters_by_group() -> TestResult {
    let mut problems = Vec::new();
    let mut found = false;
    for (path, d) in dashboards()? {
        let f = short(&path);
        let vars = templating(&d);
        let Some(group) = vars.iter().find(|v| v.get("name").and_then(Value::as_str) == Some("group")) else {
            continue;
        };
        found = true;
        let query = group.get("query").and_then(|q| q.as_str().or_else(|| q.get("query").and_then(Value::as_str)));
        if query != Some("label_values(meshgroup_requests_total, group)") {
            problems.push(format!("{f}: group variable query is {query:?}"));
        }
        let desc = d.get("description").and_then(Value::as_str).unwrap_or("");
        if !desc.contains("metrics.per_group = true") {
            problems.push(format!("{f}: description must say it needs metrics.per_group = true"));
        }
        for p in panels(&d) {
            for t in p.get("targets").and_then(Value::as_array).into_iter().flatten() {
                let expr = t.get("expr").and_then(Value::as_str).unwrap_or("");
                if !expr.contains("group=\"$group\"") {
                    problems.push(format!("{f}: expr does not filter group=\"$group\": {expr}"));
                }
            }
        }
    }
    if !found {
        problems.push("no dashboard has a group variable".into());
    }
    finish(problems)
}

#[test]
fn dashboards_and_alerts_use_only_catalogued_metrics() -> TestResult {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (path, d) in dashboards()? {
        for q in dashboard_queries(&d) {
            for name in metric_names(&q) {
                if let Err(e) = check_series_name(&name) {
                    problems.push(format!("{}: {e}", short(&path)));
                }
                used.insert(name);
            }
        }
    }
    for (path, text) in alert_files()? {
        let f = short(&path);
        let exprs = yaml_exprs(&text);
        if exprs.is_empty() {
            problems.push(format!("{f}: no expr found"));
        }
        // Expressions must name series the exporter emits.
        for expr in &exprs {
            for name in metric_names(expr) {
                if let Err(e) = check_series_name(&name) {
                    problems.push(format!("{f}: {e}"));
                }
            }
        }
        // Comments and annotations may name a histogram by its base name, but only catalogued metrics.
        for name in metric_names(&text) {
            if catalogued(&name).is_none()
                && let Err(e) = check_series_name(&name)
            {
                problems.push(format!("{f}: {e}"));
            }
        }
    }
    // The overview shows every catalogued metric.
    for m in CATALOGUE {
        let shown = used.contains(m.name) || HISTOGRAM_SUFFIXES.iter().any(|s| used.contains(&format!("{}{s}", m.name)));
        if !shown {
            problems.push(format!("{} is on no dashboard", m.name));
        }
    }
    finish(problems)
}

#[test]
fn alert_rules_have_severity_summary_and_description() -> TestResult {
    let mut problems = Vec::new();
    for (path, text) in alert_files()? {
        let f = short(&path);
        // Split the text at each `- alert:` and look inside each rule's slice.
        let starts: Vec<usize> = text.match_indices("- alert:").map(|(i, _)| i).collect();
        if starts.is_empty() {
            problems.push(format!("{f}: no alerting rules"));
        }
        for (k, &start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(text.len());
            let rule = &text[start..end];
            let name = rule["- alert:".len()..].lines().next().unwrap_or("").trim();
            for key in ["expr:", "severity:", "summary:", "description:"] {
                if !rule.lines().any(|l| l.trim_start().starts_with(key)) {
                    problems.push(format!("{f}: alert {name} has no {key}"));
                }
            }
        }
    }
    finish(problems)
}

#[test]
fn catalogue_follows_naming_rules() -> TestResult {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for m in CATALOGUE {
        let n = m.name;
        if !seen.insert(n) {
            problems.push(format!("{n} is catalogued twice"));
        }
        if !n.starts_with(PREFIX) || !n[PREFIX.len()..].chars().all(is_name_char) || n.len() == PREFIX.len() {
            problems.push(format!("{n}: names are meshgroup_ followed by [a-z0-9_]"));
        }
        match m.kind {
            Kind::Counter if !n.ends_with("_total") => problems.push(format!("{n}: counters end with _total")),
            Kind::Gauge | Kind::Histogram if n.ends_with("_total") => problems.push(format!("{n}: only counters end with _total")),
            _ => {}
        }
        let help = m.help.to_ascii_lowercase();
        let is_duration =
            n.contains("duration") || n.contains("latency") || help.starts_with("time ") || help.starts_with("duration ") || help.contains("seconds");
        if m.kind == Kind::Histogram && is_duration && !n.ends_with("_seconds") {
            problems.push(format!("{n}: duration histograms end with _seconds"));
        }
        if HISTOGRAM_SUFFIXES.iter().any(|s| n.ends_with(s)) {
            problems.push(format!("{n}: clashes with the exporter's histogram suffixes"));
        }
        if m.help.trim().is_empty() {
            problems.push(format!("{n}: help text is empty"));
        }
        for l in m.labels {
            if FORBIDDEN_LABELS.contains(l) {
                problems.push(format!("{n}: label {l:?} would label by member; never allowed"));
            }
            if *l == "le" || *l == "quantile" || l.starts_with("__") {
                problems.push(format!("{n}: label {l:?} is reserved"));
            }
        }
    }
    finish(problems)
}

#[test]
fn metrics_doc_covers_the_catalogue() -> TestResult {
    let path = root().join("docs/metrics.md");
    let doc = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut problems = Vec::new();
    let mentioned: BTreeSet<String> = metric_names(&doc).into_iter().collect();
    for m in CATALOGUE {
        if !mentioned.contains(m.name) {
            problems.push(format!("docs/metrics.md does not mention {}", m.name));
        }
        let row = format!("| `{}` |", m.name);
        if !doc.lines().any(|l| l.trim_start().starts_with(&row)) {
            problems.push(format!("docs/metrics.md has no table row starting {row}"));
        }
    }
    for name in &mentioned {
        if let Err(e) = check_series_name(name) {
            // The doc may name a histogram by its base name.
            if catalogued(name).is_none() {
                problems.push(format!("docs/metrics.md: {e}"));
            }
        }
    }
    for phrase in ["metrics.per_group = true", "Pointing Prometheus and Grafana at meshgroup in three steps"] {
        if !doc.contains(phrase) {
            problems.push(format!("docs/metrics.md does not contain {phrase:?}"));
        }
    }
    finish(problems)
}

#[test]
fn scanner_finds_bounded_names() {
    let found = metric_names("rate(meshgroup_a_total[5m]) / x_meshgroup_b + meshgroup_c_bucket{le=\"1\"} meshgroup_ meshgroup_d");
    assert_eq!(found, ["meshgroup_a_total", "meshgroup_c_bucket", "meshgroup_d"]);
    assert!(check_series_name("meshgroup_db_query_duration_seconds_bucket").is_ok());
    assert!(check_series_name("meshgroup_db_query_duration_seconds").is_err());
    assert!(check_series_name("meshgroup_requests_total_count").is_err());
    assert!(check_series_name("meshgroup_nonexistent_total").is_err());
    let yaml = "rules:\n  - alert: A\n    expr: up == 0\n  - alert: B\n    expr: |\n      rate(meshgroup_x_total[5m])\n        > 0\n    for: 5m\n";
    assert_eq!(yaml_exprs(yaml), ["up == 0", "rate(meshgroup_x_total[5m])\n> 0"]);
}
