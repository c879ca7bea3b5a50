//! docs/cli.md against the binaries' own `--help`, so the reference cannot drift: every flag
//! and visible alias each binary takes has a row in its section of the page, every default
//! `--help` shows is in that flag's row, and the page lists no flag the binary does not take.

use std::collections::BTreeMap;
use std::process::Command;

use clap::CommandFactory;

/// A flag as `--help` shows it.
#[derive(Debug, Default)]
struct HelpFlag {
    aliases: Vec<String>,
    default: Option<String>,
}

/// The flags of a clap long help (`--help`), without `--help` and `--version` themselves.
fn help_flags(help: &str) -> BTreeMap<String, HelpFlag> {
    let mut flags: BTreeMap<String, HelpFlag> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        // A flag's own line is indented by at most 6; its description by more.
        if indent <= 6 && trimmed.starts_with('-') {
            current = trimmed
                .split_whitespace()
                .find_map(|w| w.strip_prefix("--"))
                .map(|w| w.trim_end_matches(',').to_owned())
                .filter(|n| n != "help" && n != "version");
            if let Some(name) = &current {
                flags.entry(name.clone()).or_default();
            }
            continue;
        }
        let Some(name) = &current else { continue };
        let flag = flags.get_mut(name).expect("entered above");
        if let Some(rest) = trimmed.strip_prefix("[default: ") {
            flag.default = Some(rest.trim_end_matches(']').to_owned());
        }
        for prefix in ["[alias: ", "[aliases: "] {
            if let Some(rest) = trimmed.strip_prefix(prefix) {
                for alias in rest.trim_end_matches(']').split(", ") {
                    flag.aliases.push(alias.trim_start_matches("--").to_owned());
                }
            }
        }
        // A default written into the description, as `[default: all CPUs]`.
        if let Some(start) = trimmed.find("[default: ") {
            let rest = &trimmed[start + "[default: ".len()..];
            if let Some(end) = rest.find(']') {
                flag.default.get_or_insert_with(|| rest[..end].to_owned());
            }
        }
    }
    flags
}

/// The table rows of one `## ` section of docs/cli.md, by every `--flag` in their first cell
/// (a flag and its aliases share a row).
fn doc_rows(page: &str, heading: &str) -> BTreeMap<String, String> {
    let start = page
        .find(heading)
        .unwrap_or_else(|| panic!("docs/cli.md has no {heading:?} section"));
    let section = &page[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for token in first_cell.split('`').filter(|t| t.starts_with("--")) {
            let flag = token.trim_start_matches("--");
            let flag = flag.split_whitespace().next().unwrap_or_default();
            let previous = rows.insert(flag.to_owned(), line.to_owned());
            assert!(previous.is_none(), "docs/cli.md lists --{flag} twice");
        }
    }
    rows
}

fn check(binary: &str, help: &str, heading: &str) {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md"))
        .expect("docs/cli.md");
    let flags = help_flags(help);
    assert!(flags.len() > 10, "{binary} --help parsed to {flags:?}");
    let rows = doc_rows(&page, heading);
    let mut problems = Vec::new();
    for (name, flag) in &flags {
        let Some(row) = rows.get(name) else {
            problems.push(format!("{binary} --{name} is missing from docs/cli.md"));
            continue;
        };
        for alias in &flag.aliases {
            if rows.get(alias) != Some(row) {
                problems.push(format!("--{name}'s alias --{alias} is not in its row"));
            }
        }
        if let Some(default) = &flag.default {
            let cells: Vec<&str> = row.split('|').collect();
            let default_cell = cells.get(2).copied().unwrap_or_default();
            if !default_cell.contains(default.as_str()) {
                problems.push(format!(
                    "{binary} --{name}: --help's default {default:?} is not in the row's default cell {default_cell:?}"
                ));
            }
        }
    }
    let known = |f: &String| flags.contains_key(f) || flags.values().any(|h| h.aliases.contains(f));
    for flag in rows.keys().filter(|f| !known(f)) {
        problems.push(format!(
            "docs/cli.md lists --{flag}, which {binary} does not take"
        ));
    }
    assert!(
        problems.is_empty(),
        "docs/cli.md is out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn engine_flags_match_the_reference() {
    let out = Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("--help")
        .output()
        .expect("engine --help runs");
    assert!(out.status.success());
    check(
        "engine",
        &String::from_utf8_lossy(&out.stdout),
        "## `engine`",
    );
}

#[test]
fn loadgen_flags_match_the_reference() {
    let help = ringrpc_loadgen::Cli::command()
        .render_long_help()
        .to_string();
    check("loadgen", &help, "## `loadgen`");
}

#[test]
fn the_parser_sees_what_a_reference_row_needs() {
    let help = "Options:\n      --recv-buffers <N>\n          Receive buffers\n          \n          [default: 512]\n          [aliases: --buffers, --bufs]\n      --cores <N>\n          Reactor threads [default: all CPUs]\n  -h, --help\n          Print help\n";
    let flags = help_flags(help);
    assert_eq!(flags.len(), 2, "{flags:?}");
    assert_eq!(flags["recv-buffers"].default.as_deref(), Some("512"));
    assert_eq!(flags["recv-buffers"].aliases, ["buffers", "bufs"]);
    assert_eq!(flags["cores"].default.as_deref(), Some("all CPUs"));
    let page = "## `engine`\n\n| flag | default | meaning |\n| --- | --- | --- |\n| `--recv-buffers N` (`--buffers`) | 512 | x |\n\n## next\n| `--other` | | |\n";
    let rows = doc_rows(page, "## `engine`");
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["buffers", "recv-buffers"]);
}
