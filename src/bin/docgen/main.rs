//! `rxmigrate-docgen OUTDIR`: the man pages (`man1/rxmigrate.1` and one
//! `rxmigrate-SUBCOMMAND.1` per subcommand) and the bash and zsh
//! completions of `rxmigrate`, generated from its clap definition, and the
//! save helper's page, `man1/rxmigrate-save-helper.1` (`helper_page`). Run by
//! `ci/package`; built only with the `docgen` feature, so neither the
//! `rxmigrate` binary nor the save helper links the generators.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::{generate_to, Shell};
use rxmigrate::cli::args::Cli;
use std::path::{Path, PathBuf};

mod helper_page;

fn write_page(cmd: &clap::Command, name: &str, file: &Path) -> Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .render(&mut buf)
        .with_context(|| format!("rendering {}", file.display()))?;
    std::fs::write(file, buf).with_context(|| format!("writing {}", file.display()))
}

/// The page of `cmd` and of each of its visible subcommands, named
/// `PARENT-SUB.1` as git and cargo name theirs.
fn pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let file = dir.join(format!("{name}.1"));
    write_page(cmd, name, &file)?;
    written.push(file);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        pages(sub, &sub_name, dir, written)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: rxmigrate-docgen OUTDIR")?;
    let mut cmd = Cli::command();
    cmd.build();
    let man = out.join("man1");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    let mut written = Vec::new();
    pages(&cmd, "rxmigrate", &man, &mut written)?;
    let helper = man.join("rxmigrate-save-helper.1");
    std::fs::write(&helper, helper_page::render())
        .with_context(|| format!("writing {}", helper.display()))?;
    written.push(helper);
    for shell in [Shell::Bash, Shell::Zsh] {
        written.push(generate_to(shell, &mut cmd, "rxmigrate", &completions)?);
    }
    for f in written {
        println!("{}", f.display());
    }
    Ok(())
}
