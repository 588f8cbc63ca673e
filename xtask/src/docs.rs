//! Generated sections of Markdown files: each task owns one section, delimited by
//! `<!-- begin NAME -->` / `<!-- end NAME -->`, and replaces only that, so several
//! generators can share docs/results.md.

use std::path::Path;

use anyhow::Context as _;

/// Replaces section `name` of the Markdown file at `path` by `## title` and `body`
/// (appending it, or creating the file, when it is not there yet).
pub fn replace_section(path: &Path, name: &str, title: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- begin {name} -->");
    let end = format!("<!-- end {name} -->");
    let section = format!("{begin}\n## {title}\n\n{}\n{end}\n", body.trim_end());
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Results\n\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            let after = &old[e + end.len()..];
            format!(
                "{}{section}{}",
                &old[..b],
                after.strip_prefix('\n').unwrap_or(after)
            )
        }
        _ => format!("{}\n{section}", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_and_others_kept() {
        let dir = std::env::temp_dir().join(format!("lutq-docs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.md");
        std::fs::write(&path, "# Results\n\nintro\n").unwrap();
        replace_section(&path, "a", "A", "one").unwrap();
        replace_section(&path, "b", "B", "two").unwrap();
        replace_section(&path, "a", "A", "three").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Results\n\nintro\n"));
        assert!(text.contains("## A\n\nthree\n<!-- end a -->"));
        assert!(!text.contains("one"));
        assert!(text.find("## A").unwrap() < text.find("## B").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
