//! The layering the README's layout section promises: every top-level module of `src/` is listed
//! there, and each uses (`crate::…`, outside comments and unit tests) only modules listed below it. So the tree
//! has no import cycle between its top-level modules, and the list is the dependency order.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

type R = Result<(), Box<dyn std::error::Error>>;

/// The modules of the README's layout block, top first.
fn readme_order() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let readme = std::fs::read_to_string("README.md")?;
    let start = readme.find("## Layout").ok_or("no layout section")?;
    let block = readme[start..].split("```").nth(1).ok_or("no layout block")?;
    let mut order = Vec::new();
    for line in block.lines().filter(|l| l.starts_with("src/")) {
        let first = line.split_whitespace().next().unwrap_or_default();
        let name = first.trim_start_matches("src/").trim_end_matches(',').trim_end_matches('/').trim_end_matches(".rs").to_owned();
        if !order.contains(&name) {
            order.push(name);
        }
    }
    Ok(order)
}

/// Top-level module of each `.rs` file under `src/`, with the `crate::` names its code uses.
fn uses() -> Result<HashMap<String, BTreeSet<String>>, Box<dyn std::error::Error>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut stack = vec![Path::new("src").to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix("src")?.to_string_lossy().into_owned();
            let top = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
            let used = out.entry(top.clone()).or_default();
            // Unit tests (a file's `#[cfg(test)]` module, last by convention) may use helpers from
            // anywhere; the layering is about the code that ships.
            let text = std::fs::read_to_string(&path)?;
            let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in shipped.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if name != top && !name.is_empty() {
                        used.insert(name);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn each_module_uses_only_the_modules_listed_below_it() -> R {
    let order = readme_order()?;
    let uses = uses()?;
    let position = |m: &str| order.iter().position(|o| o == m);
    let mut problems = Vec::new();
    for (module, used) in &uses {
        let Some(at) = position(module) else {
            problems.push(format!("src/{module} is not in the README's layout section"));
            continue;
        };
        for u in used {
            // Functions of lib.rs (block_on, init_tracing) are the runner, not a layer.
            match position(u) {
                Some(p) if p > at => {}
                Some(_) => problems.push(format!("{module} uses {u}, which the layout lists above it")),
                None if ["block_on", "init_tracing"].contains(&u.as_str()) => {}
                None => problems.push(format!("{module} uses {u}, which the layout does not list")),
            }
        }
    }
    problems.sort();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Inside `src/api/`, too, the submodules form no cycle: the router holds the inbound LXMF path,
/// the server destination and the services, and none of those holds the others (the services
/// used to hold both, which took each of them as its argument).
#[test]
fn the_api_submodules_form_no_cycle() -> R {
    let dir = Path::new("src/api");
    let mut edges: HashMap<String, BTreeSet<String>> = HashMap::new();
    let modules: Vec<String> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().into_owned())).filter(|m| m != "mod").collect();
    for m in &modules {
        let text = std::fs::read_to_string(dir.join(format!("{m}.rs")))?;
        let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
        let used = edges.entry(m.clone()).or_default();
        for line in shipped.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for prefix in ["crate::api::", "super::"] {
                for (i, _) in line.match_indices(prefix) {
                    let name: String = line[i + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if modules.contains(&name) && &name != m {
                        used.insert(name);
                    }
                }
            }
        }
    }
    // Depth-first search for a path back to the start.
    for start in &modules {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            for next in edges.get(path.last().map(String::as_str).unwrap_or_default()).into_iter().flatten() {
                assert!(next != start, "api submodules form a cycle: {} -> {next}", path.join(" -> "));
                if !path.contains(next) {
                    stack.push([path.clone(), vec![next.clone()]].concat());
                }
            }
        }
    }
    assert!(edges.get("services").is_some_and(BTreeSet::is_empty), "api::services uses {:?}", edges.get("services"));
    Ok(())
}
