//! The operator CLI as an operator uses it: the real binary, JSON output, exit codes.

use std::process::{Command, Output};

type R = Result<(), Box<dyn std::error::Error>>;

struct Env {
    dir: std::path::PathBuf,
    db_url: Option<String>,
}

impl Env {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("meshgroup-cli-{}-{}", std::process::id(), rand_suffix()));
        Env { dir, db_url: None }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgroup"));
        cmd.args(args).env("MESHGROUP_DATA_DIR", &self.dir).env_remove("MESHGROUP_DATABASE__URL");
        if let Some(url) = &self.db_url {
            cmd.env("MESHGROUP_DATABASE__URL", url);
        }
        cmd.output().unwrap_or_else(|e| panic!("cannot run meshgroup: {e}"))
    }

    fn json(&self, args: &[&str]) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

fn assert_input_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn group_lifecycle_and_bad_input() -> R {
    let env = Env::new();
    let g = env.json(&["group", "create", "--name", "Mesh Friends", "--post-stamp-cost", "8"])?;
    let id = g["id"].as_i64().ok_or("id")?.to_string();
    let lxmf = g["lxmf_destination_hash"].as_str().ok_or("lxmf")?.to_owned();
    assert_eq!(lxmf.len(), 32);
    assert_eq!(g["post_stamp_cost"], 8);

    // GROUP may be the id or any hash, with or without <>
    let shown = env.json(&["group", "show", &format!("<{lxmf}>")])?;
    assert_eq!(shown["name"], "Mesh Friends");

    let alice = "3e3c2cef10df1fa5ed6139690e3a9620";
    env.json(&["member", "add", &id, alice, "--name", "alice", "--rights", "kick,ban"])?;
    let members = env.json(&["member", "list", &id])?;
    assert_eq!(members[0]["rights"], serde_json::json!(["kick", "ban"]));

    assert_input_error(&env.run(&["member", "add", &id, alice]), "already exists");
    assert_input_error(&env.run(&["group", "show", "4242"]), "no group 4242");
    assert_input_error(&env.run(&["group", "show", "00112233aabb"]), "malformed");
    assert_input_error(&env.run(&["member", "add", &id, "xyz"]), "malformed identity hash");
    assert_input_error(&env.run(&["group", "create", "--name", "x", "--join-stamp-cost", "255"]), "not in 0..=254");
    assert_input_error(&env.run(&["group", "update", &id, "--post-stamp-cost", "999"]), "not in 0..=254");
    assert_input_error(&env.run(&["member", "set-permissions", &id, alice, "fly"]), "unknown right");
    assert_input_error(&env.run(&["ban", "add", &id, alice, "--reason", "  "]), "needs a reason");
    // none of the refused commands wrote anything
    assert_eq!(env.json(&["group", "list"])?.as_array().map(Vec::len), Some(1));
    assert_eq!(env.json(&["member", "list", &id])?.as_array().map(Vec::len), Some(1));

    env.json(&["ban", "add", &id, alice, "--reason", "spam"])?;
    assert_eq!(env.json(&["member", "list", &id])?.as_array().map(Vec::len), Some(0));
    assert_input_error(&env.run(&["member", "add", &id, alice]), "banned");
    env.json(&["ban", "remove", &id, alice])?;

    // export, delete, import: the same identity and hashes come back
    let key = env.dir.join("group.id");
    env.json(&["identity", "export", &id, "--out", key.to_str().ok_or("path")?])?;
    assert_eq!(std::fs::read(&key)?.len(), 64);
    env.json(&["group", "delete", &id])?;
    let back = env.json(&["identity", "import", "--file", key.to_str().ok_or("path")?, "--name", "Mesh Friends"])?;
    assert_eq!(back["lxmf_destination_hash"], lxmf.as_str());
    Ok(())
}

#[test]
fn private_group_join_requests() -> R {
    let env = Env::new();
    let g = env.json(&["group", "create", "--name", "x", "--private", "--private-name", "Cottle Family Chat"])?;
    assert_eq!(g["visibility"], "private");
    let id = g["id"].to_string();
    assert_input_error(&env.run(&["join-requests", "approve", &id, "3e3c2cef10df1fa5ed6139690e3a9620"]), "not found");
    assert_eq!(env.json(&["join-requests", "list", &id])?.as_array().map(Vec::len), Some(0));
    Ok(())
}

#[test]
fn data_dir_and_database_are_private() -> R {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.json(&["group", "create", "--name", "x"])?;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&env.dir)?, 0o700);
    assert_eq!(mode(&env.dir.join("meshgroup.db"))?, 0o600);
    Ok(())
}

#[test]
fn works_on_postgres_too() -> R {
    let Ok(url) = std::env::var("MESHGROUP_TEST_DATABASE_URL") else { return Ok(()) };
    let rt = tokio::runtime::Runtime::new()?;
    let db = rt.block_on(meshgroup::store::testing::postgres(&url))?;
    let mut env = Env::new();
    env.db_url = Some(db_url_of(&url, &db));
    let g = env.json(&["group", "create", "--name", "pg group"])?;
    assert_eq!(env.json(&["group", "show", g["identity_hash"].as_str().ok_or("hash")?])?["name"], "pg group");
    drop(db);
    Ok(())
}

fn db_url_of(admin: &str, db: &meshgroup::store::testing::TestStore) -> String {
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{}", db.name.as_deref().unwrap_or("test"))
}

/// Issue 16: an argument error was three lines in clap's own form; `--json` errors were plain text;
/// `bench history --help` showed a default its parser refused.
#[test]
fn argument_errors_are_one_line_and_json_errors_are_json() -> R {
    let env = Env::new();
    let out = env.run(&["group", "create", "--name", "X", "--join-stamp-cost", "300"]);
    assert_input_error(&out, "300 is not in 0..=254");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("meshgroup: "), "{err}");
    // What is missing is named on that one line (clap puts it on the next).
    let out = env.run(&["group", "create"]);
    assert_input_error(&out, "not provided: --name <NAME>");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end().lines().count(), 1);

    for args in [&["--json", "group", "create", "--name", "X", "--join-stamp-cost", "300"][..], &["--json", "group", "show", "999"][..]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stderr)?;
        assert_eq!(v["code"], 2, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }

    if cfg!(feature = "bench") {
        let help = env.run(&["bench", "history", "--help"]);
        assert!(String::from_utf8_lossy(&help.stdout).contains("[default: 1000,10000,100000]"));
    }
    Ok(())
}

#[test]
fn group_show_prints_the_contact_link_and_its_qr_code() -> R {
    let env = Env::new();
    let g = env.json(&["group", "create", "--name", "Shared"])?;
    let id = g["id"].as_i64().ok_or("id")?.to_string();
    let lxmf = g["lxmf_destination_hash"].as_str().ok_or("lxmf")?;
    // --json carries the link (and no drawing, with or without --qr).
    let shown = env.json(&["group", "show", &id, "--qr"])?;
    let link = shown["contact_link"].as_str().ok_or("contact_link")?.to_owned();
    let key = link.strip_prefix(&format!("lxma://{lxmf}:")).ok_or_else(|| format!("{link} does not name {lxmf}"))?;
    assert_eq!(key.len(), 128, "the 64-byte public key in hex");
    let identity = meshgroup::wire::identity::identity_hash(&hex::decode(key)?.try_into().map_err(|_| "64 bytes")?);
    assert_eq!(hex::encode(identity), shown["identity_hash"].as_str().ok_or("identity_hash")?, "the key is the group's");
    assert!(!shown.to_string().contains('█'));

    // The table names the hash and the link; --qr adds the code, drawn in half blocks.
    let plain = String::from_utf8(env.run(&["group", "show", &id]).stdout)?;
    assert!(plain.contains(&link) && plain.contains(lxmf), "{plain}");
    assert!(!plain.contains('█'));
    let out = env.run(&["group", "show", &id, "--qr"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    let qr: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("qr ")).map(|l| l.trim_start_matches("qr").trim()).collect();
    let width = qr.first().map(|l| l.chars().count()).ok_or_else(|| format!("no QR code in {text}"))?;
    // A QR symbol is 21 + 4k modules wide, with a quiet zone of 4 on each side, two rows a line.
    assert!((width - 8 - 21) % 4 == 0 && qr.iter().all(|l| l.chars().count() == width), "{text}");
    assert_eq!(qr.len(), width.div_ceil(2), "{text}");
    assert!(qr[0].chars().all(|c| c == '█'), "the quiet zone is light: {}", qr[0]);
    Ok(())
}

/// Issue 16: `identity export` overwrote an existing file without asking.
#[test]
fn identity_export_refuses_to_overwrite_without_force() -> R {
    let env = Env::new();
    let g = env.json(&["group", "create", "--name", "Keys"])?;
    let id = g["id"].as_i64().ok_or("id")?.to_string();
    std::fs::create_dir_all(&env.dir)?;
    let file = env.dir.join("existing.key");
    std::fs::write(&file, b"precious")?;
    let path = file.to_string_lossy().into_owned();
    assert_input_error(&env.run(&["identity", "export", &id, "--out", &path]), "pass --force");
    assert_eq!(std::fs::read(&file)?, b"precious");
    assert!(env.run(&["identity", "export", &id, "--out", &path, "--force"]).status.success());
    assert_eq!(std::fs::read(&file)?.len(), 64);
    Ok(())
}

/// Issue 16: every subcommand has a one-line help, and the README's CLI synopsis names every
/// subcommand and flag that `--help` does (as the config test does for `default.toml`).
#[test]
fn the_readme_synopsis_matches_the_help() -> R {
    use clap::CommandFactory;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let start = readme.find("### The operator CLI").ok_or("no CLI section")?;
    let block = &readme[start..];
    let block = &block[block.find("```sh").ok_or("no synopsis")?..];
    let block = &block[..block[5..].find("```").ok_or("unterminated synopsis")? + 5];
    let mut problems = Vec::new();
    let cli = meshgroup::cli::Cli::command();
    for top in cli.get_subcommands() {
        let top_name = top.get_name();
        if top.get_about().is_none() {
            problems.push(format!("`{top_name}` has no help line"));
        }
        let lines: Vec<&str> =
            block.lines().filter(|l| l.starts_with(&format!("meshgroup {top_name}")) || (l.starts_with(' ') && !l.trim().is_empty())).collect();
        let leaves: Vec<&clap::Command> = if top.has_subcommands() { top.get_subcommands().collect() } else { vec![top] };
        for leaf in leaves {
            if leaf.get_about().is_none() {
                problems.push(format!("`{top_name} {}` has no help line", leaf.get_name()));
            }
            let named = lines.iter().any(|l| l.split(|c: char| c.is_whitespace() || c == '|').any(|w| w == leaf.get_name()));
            if !named {
                problems.push(format!("README synopsis lacks `{top_name} {}`", leaf.get_name()));
            }
            for arg in leaf.get_arguments() {
                if let Some(long) = arg.get_long().filter(|l| !["help", "json", "config"].contains(l))
                    && !lines.iter().any(|l| l.contains(&format!("--{long}")))
                {
                    problems.push(format!("README synopsis lacks `{top_name} {} --{long}`", leaf.get_name()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
