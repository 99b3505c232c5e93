//! The repository is self-contained: no file refers to a document outside it, and every link
//! in its Markdown files leads to a file (and heading) inside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

/// Directories that are build output or local state, not the repository's files.
const SKIP_DIRS: [&str; 8] = [
    ".git",
    "target",
    "node_modules",
    "corpus",
    "artifacts",
    "tidings-data",
    "__pycache__",
    // pytest's cache (its README links to pytest's docs), left by a local test run.
    ".pytest_cache",
];

/// Ways files have referred to documents outside the repository.
const OUTSIDE: [&str; 5] = [
    "DESIGN.md",
    "DESIGN §",
    "../shared/",
    "/work/",
    "shared/notes",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every text file of the repository (relative path, contents).
fn text_files() -> Result<Vec<(PathBuf, String)>> {
    let root = root();
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            // `.git` is a directory, or in a worktree a file naming one: neither is ours.
            if name == ".git" {
                continue;
            }
            if entry.file_type()?.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    dirs.push(path);
                }
                continue;
            }
            // Binary files (seeds, CAR files, images) are not read.
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path.strip_prefix(&root)?.to_path_buf(), text));
            }
        }
    }
    Ok(out)
}

#[test]
fn no_file_refers_to_a_document_outside_the_repository() -> Result<()> {
    let files = text_files()?;
    ensure!(files.len() > 50, "only {} files found", files.len());
    let me = Path::new("tests/tests/docs.rs");
    let mut found = Vec::new();
    for (path, text) in &files {
        if path == me {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if let Some(p) = OUTSIDE.iter().find(|p| line.contains(**p)) {
                found.push(format!(
                    "{}:{}: {p:?} in {}",
                    path.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    ensure!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
    Ok(())
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> HashSet<String> {
    let mut code = false;
    let mut out = HashSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
        } else if !code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the Markdown links `[text](target)` in `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            continue;
        }
        // Inline code spans are not links.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_markdown_link_leads_inside_the_repository() -> Result<()> {
    let files = text_files()?;
    let root = root();
    let mut bad = Vec::new();
    let mut checked = 0;
    for (path, text) in files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "md"))
    {
        for target in links(text) {
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            if target.contains("://") || target.starts_with('/') || target.starts_with("mailto:") {
                bad.push(format!(
                    "{}: {target} leads outside the repository",
                    path.display()
                ));
                continue;
            }
            let dest = if file.is_empty() {
                root.join(path)
            } else {
                root.join(path.parent().unwrap_or(Path::new(""))).join(file)
            };
            let Ok(dest) = dest.canonicalize() else {
                bad.push(format!("{}: {target}: no such file", path.display()));
                continue;
            };
            if !dest.starts_with(root.canonicalize()?) {
                bad.push(format!(
                    "{}: {target} leads outside the repository",
                    path.display()
                ));
                continue;
            }
            if let Some(a) = anchor {
                let text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&text).contains(a) {
                    bad.push(format!("{}: {target}: no heading #{a}", path.display()));
                }
            }
        }
    }
    ensure!(checked > 20, "only {checked} links found");
    ensure!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
    Ok(())
}

#[test]
fn the_docs_the_readme_and_the_help_point_to_exist() -> Result<()> {
    for doc in ["api.md", "filters.md", "protocols.md", "operations.md"] {
        ensure!(
            root().join("docs").join(doc).is_file(),
            "docs/{doc} is missing"
        );
    }
    for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
        ensure!(root().join(license).is_file(), "{license} is missing");
    }
    let manifest = std::fs::read_to_string(root().join("Cargo.toml"))?;
    ensure!(manifest.contains(r#"license = "MIT OR Apache-2.0""#));
    Ok(())
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(slug(" POST /v1/publish"), "post-v1publish");
    assert_eq!(slug(" GET /v1/heads?topic=T"), "get-v1headstopict");
    assert_eq!(slug(" A 5-minute tour"), "a-5-minute-tour");
    assert_eq!(slug(" DELETE /v1/durable/{name}"), "delete-v1durablename");
}
