//! Every message, enum, enum value and field of `proto/meshgroup.proto` has a `//` comment on
//! the line directly above it, for client authors.

/// Lines that declare nothing: blank, comments, block ends and file-level statements.
fn declares_nothing(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("//")
        || line.starts_with('}')
        || ["syntax", "package", "option", "import"]
            .iter()
            .any(|k| line.starts_with(k) && !line[k.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
}

/// The 1-based numbers of declaration lines not directly preceded by a `//` comment line.
fn undocumented(proto: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = proto.lines().map(str::trim).collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, line)| !declares_nothing(line))
        .filter(|(i, _)| !(*i > 0 && lines[i - 1].starts_with("//")))
        .map(|(i, line)| (i + 1, line.to_string()))
        .collect()
}

#[test]
fn every_declaration_in_the_proto_has_a_comment_above_it() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/meshgroup.proto");
    let proto = std::fs::read_to_string(path).expect("read proto/meshgroup.proto");
    let missing = undocumented(&proto);
    let report: Vec<String> = missing.iter().map(|(n, l)| format!("proto/meshgroup.proto:{n}: no `//` comment above `{l}`")).collect();
    assert!(missing.is_empty(), "undocumented declarations:\n{}", report.join("\n"));
}
