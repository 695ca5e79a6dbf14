//! No command silently replaces a run. `train` (a fresh run, or a resume into another
//! directory), `demo` and `import` check the directory they would write first: a new or
//! empty one is used; one holding a run is refused (exit 2, naming the flags that resolve it)
//! unless `--force` is given, and then deleted as a whole before anything new is written, so
//! two models never mix in one run directory; anything else non-empty is refused even with
//! `--force`, which only ever deletes run directories.
//!
//! ```no_run
//! use switchyard_cli::new_run::{NewRun, Flags};
//!
//! let dir = std::path::Path::new("runs/x");
//! let run = NewRun::check(dir, false, &Flags::TRAIN)?; // refuses if runs/x holds a run
//! run.refuse_reading(dir.join("../data").as_path(), "data.path")?;
//! // ... build everything that can fail on the user's input ...
//! run.prepare()?; // with --force: the old run is deleted here
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_io::run_dir::{self, Occupant};

use crate::UserError;

/// How a command's refusal says to resolve it.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    /// The flag that names the directory (`--run-dir`, `--out`).
    pub dir: &'static str,
    /// Whether the command can continue the existing run (`--resume`).
    pub resume: bool,
}

impl Flags {
    pub const TRAIN: Flags = Flags {
        dir: "--run-dir",
        resume: true,
    };
    pub const OUT: Flags = Flags {
        dir: "--out",
        resume: false,
    };
}

/// A directory a command is about to write a new run into, checked.
#[derive(Clone, Debug)]
pub struct NewRun {
    path: PathBuf,
    /// It holds a run that `--force` allows to be deleted.
    replace: bool,
    force: bool,
}

impl NewRun {
    /// Checks `path`: free (absent or empty), a run (refused unless `force`), or something
    /// else (refused).
    pub fn check(path: &Path, force: bool, flags: &Flags) -> anyhow::Result<Self> {
        let occupant = run_dir::occupant(path)?;
        let shown = path.display();
        match occupant {
            Occupant::Nothing => Ok(Self {
                path: path.into(),
                replace: false,
                force,
            }),
            Occupant::Run { .. } if force => Ok(Self {
                path: path.into(),
                replace: true,
                force,
            }),
            Occupant::Run { latest, steps } => {
                let what = match latest {
                    Some(l) => format!("latest: {l}, {steps} checkpoint(s)"),
                    None => format!("{steps} checkpoint(s)"),
                };
                Err(UserError::new(format!(
                    "{shown} already holds a run ({what}); refusing to replace it"
                ))
                .with_hint(alternatives(flags))
                .into())
            }
            Occupant::Other { example } => Err(UserError::new(format!(
                "{shown} is not empty and is not a Switchyard run directory (it holds \
                 `{example}`); refusing to write a run into it"
            ))
            .with_hint(format!(
                "choose a new or empty directory with `{} <dir>`; `--force` only replaces run \
                 directories",
                flags.dir
            ))
            .into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [`prepare`](Self::prepare) deletes an existing run.
    pub fn replaces(&self) -> bool {
        self.replace
    }

    /// Refuses when the command reads `input` (named `what`, e.g. `init.from`) from inside
    /// the run directory that `--force` is about to delete.
    pub fn refuse_reading(&self, input: &Path, what: &str) -> anyhow::Result<()> {
        if self.replace && is_inside(input, &self.path) {
            return Err(UserError::new(format!(
                "{what} ({}) is inside {}, which --force would delete before reading it",
                input.display(),
                self.path.display()
            ))
            .with_hint(
                "write the new run to another directory, or copy what it reads elsewhere first",
            )
            .into());
        }
        Ok(())
    }

    /// Deletes the run being replaced, if any. Call it once everything that can fail on the
    /// user's input has been built, just before the first write.
    /// With `--force` it also deletes what an interrupted earlier replace left beside the
    /// directory.
    pub fn prepare(&self) -> anyhow::Result<()> {
        if self.replace {
            tracing::warn!(
                "--force: deleting the run in {} before writing the new one",
                self.path.display()
            );
        }
        if self.force {
            run_dir::replace_run(&self.path)
                .with_context(|| format!("replacing {}", self.path.display()))?;
        }
        Ok(())
    }
}

/// Whether `path` is `dir` or lies inside it (symbolic links resolved where they exist).
pub fn is_inside(path: &Path, dir: &Path) -> bool {
    let resolve = |p: &Path| {
        p.canonicalize()
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    resolve(path).starts_with(resolve(dir))
}

fn alternatives(flags: &Flags) -> String {
    let resume = if flags.resume {
        "continue it with `--resume`, "
    } else {
        ""
    };
    format!(
        "{resume}write the new run elsewhere with `{} <dir>`, or replace it with `--force` \
         (its checkpoints are deleted)",
        flags.dir
    )
}
