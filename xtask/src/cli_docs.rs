//! `cargo xtask cli-docs`: man pages and shell completions for
//! daxctl-immutable, generated from its clap definition so they cannot
//! drift from the real options.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap_complete::Shell;

use crate::cli::CliDocsArgs;
use crate::paths;

pub fn cmd(args: &CliDocsArgs) -> Result<()> {
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => paths::images_dir().join("daxctl-immutable"),
    };
    let written = write(&out)?;
    eprintln!("[cli-docs] {written} files in {}", out.display());
    eprintln!("[cli-docs] try: man -l {}", out.join("man1/daxctl-immutable.1").display());
    Ok(())
}

/// Writes man1/*.1 (the command and each subcommand) and completions/ for
/// bash, zsh and fish under `out`. Returns how many files it wrote.
pub fn write(out: &Path) -> Result<usize> {
    let man = out.join("man1");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let command = daxctl_immutable::command();
    // The .TH line's date and source: without them clap_mangen leaves the
    // date empty, and mandoc takes the source for a date it cannot parse.
    let stamp = paths::timestamp();
    let date = format!("{}-{}-{}", &stamp[..4], &stamp[4..6], &stamp[6..8]);
    let source = format!("daxctl-immutable {}", command.get_version().unwrap_or("(unversioned)"));
    let mut written = 0;
    // `name` titles the page (daxctl-immutable-seal); `bin` is what a user
    // types (daxctl-immutable seal).
    let mut page = |cmd: clap::Command, name: String, bin: String| -> Result<()> {
        let mut text = Vec::new();
        clap_mangen::Man::new(cmd.display_name(name.clone()).bin_name(bin))
            .date(&date)
            .source(&source)
            .manual("daxctl-immutable")
            .render(&mut text)
            .context("cannot render a man page")?;
        let path = man.join(format!("{name}.1"));
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
        Ok(())
    };
    page(command.clone(), "daxctl-immutable".into(), "daxctl-immutable".into())?;
    for sub in command.get_subcommands() {
        let name = sub.get_name();
        page(sub.clone(), format!("daxctl-immutable-{name}"), format!("daxctl-immutable {name}"))?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = daxctl_immutable::command();
        clap_complete::generate_to(shell, &mut cmd, "daxctl-immutable", &completions)
            .with_context(|| format!("cannot write the {shell} completion in {}", completions.display()))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_per_subcommand_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let n = write(dir.path()).unwrap();
        let subcommands = daxctl_immutable::command().get_subcommands().count();
        assert_eq!(n, 1 + subcommands + 3);
        let top = fs::read_to_string(dir.path().join("man1/daxctl-immutable.1")).unwrap();
        assert!(top.contains("seal") && top.contains("Exit status"), "{top}");
        let verify = fs::read_to_string(dir.path().join("man1/daxctl-immutable-verify.1")).unwrap();
        assert!(verify.contains("against"), "{verify}");
        let bash = fs::read_to_string(dir.path().join("completions/daxctl-immutable.bash")).unwrap();
        assert!(bash.contains("unseal"));
    }

    /// Both checkers the man-pages project uses find nothing in any page.
    #[test]
    fn the_pages_lint_clean() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        for e in fs::read_dir(dir.path().join("man1")).unwrap() {
            let page = e.unwrap().path();
            let warnings = crate::man_pages::lint(&page).unwrap();
            assert!(warnings.is_empty(), "{}: {warnings:#?}", page.display());
        }
    }
}
