//! Workload profiles: a named thing to run (a host command, or a built-in
//! lab workload in the micro-VM) and the metric to optimise, persisted in
//! the store so that benchmark history accumulates against a fixed
//! definition.
//!
//! Profiles are immutable: changing what a profile runs would silently make
//! its history incomparable, so the way to change one is remove and re-add.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use rusqlite::{params, Connection, OptionalExtension, Row};
use schedcp_proto::workload::{Better, WorkloadKind, WorkloadSpec};
use serde::{Serialize, Serializer};

use crate::error::Error;
use crate::store::{self, Store};

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Per-run limit of a command profile unless it sets its own.
pub const DEFAULT_COMMAND_TIMEOUT_S: u64 = 600;
pub const MAX_COMMAND_TIMEOUT_S: u64 = 24 * 3600;

/// A metric a profile can optimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MetricInfo {
    pub name: &'static str,
    pub unit: &'static str,
    #[schemars(with = "String")]
    pub better: Better,
    pub doc: &'static str,
}

/// The one metric of a command profile: how long the command took.
pub const WALL_TIME: MetricInfo = MetricInfo {
    name: "wall_time",
    unit: "ms",
    better: Better::Lower,
    doc: "wall-clock time from start to exit",
};

const fn lower(name: &'static str, unit: &'static str, doc: &'static str) -> MetricInfo {
    MetricInfo {
        name,
        unit,
        better: Better::Lower,
        doc,
    }
}

const fn higher(name: &'static str, unit: &'static str, doc: &'static str) -> MetricInfo {
    MetricInfo {
        name,
        unit,
        better: Better::Higher,
        doc,
    }
}

// Keep in step with the metrics the guest's workloads report
// (crates/schedcp-guest/src/workloads/{batch,wakeup,pingpong}.rs); the
// first entry of each list is the workload's primary metric.
const BATCH_METRICS: &[MetricInfo] = &[
    lower("makespan", "ms", "time until the last job finished"),
    lower("mean_completion", "ms", "mean job completion time"),
    lower(
        "short_mean_completion",
        "ms",
        "mean completion time of the short jobs",
    ),
    lower(
        "short_p90_completion",
        "ms",
        "90th percentile completion time of the short jobs",
    ),
    lower(
        "long_mean_completion",
        "ms",
        "mean completion time of the long jobs",
    ),
];

const WAKEUP_METRICS: &[MetricInfo] = &[
    lower("p99_wakeup_latency", "us", "99th percentile wakeup latency"),
    lower("p50_wakeup_latency", "us", "median wakeup latency"),
    lower(
        "p999_wakeup_latency",
        "us",
        "99.9th percentile wakeup latency",
    ),
    lower("max_wakeup_latency", "us", "largest wakeup latency"),
    higher("requests_per_s", "requests/s", "requests served per second"),
];

const PINGPONG_METRICS: &[MetricInfo] = &[
    lower("total_time", "ms", "time for every message to arrive"),
    higher(
        "messages_per_s",
        "messages/s",
        "messages delivered per second",
    ),
];

const FAIRNESS_METRICS: &[MetricInfo] = &[
    higher(
        "min_share_pct",
        "%",
        "smallest CPU share any equal-weight hog got, of the equal split",
    ),
    higher("total_cpu_ms", "ms", "CPU time all hogs got together"),
    higher(
        "niced_min_share_pct",
        "%",
        "smallest share a nice-5 hog got, of the nice-0 mean",
    ),
];

/// The metrics a lab workload reports, its primary metric first.
pub fn metrics_of(kind: WorkloadKind) -> &'static [MetricInfo] {
    match kind {
        WorkloadKind::Batch => BATCH_METRICS,
        WorkloadKind::Wakeup => WAKEUP_METRICS,
        WorkloadKind::Pingpong => PINGPONG_METRICS,
        WorkloadKind::Fairness => FAIRNESS_METRICS,
    }
}

/// What a profile runs.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A program on the host, run directly (no shell), timed wall-clock.
    Command {
        argv: Vec<String>,
        /// Working directory; `None` inherits the benchmarking process's.
        cwd: Option<PathBuf>,
        /// A run still going after this many seconds is killed and fails.
        timeout_s: u64,
    },
    /// A built-in workload in the micro-VM.
    Lab {
        #[serde(serialize_with = "as_display")]
        #[schemars(with = "serde_json::Value")]
        workload: WorkloadSpec,
    },
}

fn as_display<S: Serializer>(spec: &WorkloadSpec, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(spec)
}

impl Target {
    /// A lab target from a workload spec string (`wakeup:workers=8`).
    pub fn lab(spec: &str) -> Result<Target, Error> {
        let workload = spec.parse().map_err(|e| {
            Error::Input(format!(
                "invalid lab workload '{spec}': {e} (`schedcp lab workloads` lists them)"
            ))
        })?;
        Ok(Target::Lab { workload })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Command { .. } => "command",
            Target::Lab { .. } => "lab",
        }
    }

    /// One line for humans: the command line or the workload spec.
    pub fn describe(&self) -> String {
        match self {
            Target::Command { argv, .. } => argv
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            Target::Lab { workload } => format!("lab {workload}"),
        }
    }
}

/// `a` quoted for a POSIX shell when it needs it (display only).
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WorkloadProfile {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub target: Target,
    pub metric: String,
    pub unit: String,
    #[schemars(with = "String")]
    pub direction: Better,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A profile to add. `metric` defaults to the target's primary metric
/// (`wall_time` for commands), `direction` to that metric's own.
#[derive(Debug, Clone)]
pub struct NewProfile {
    pub name: String,
    pub description: String,
    pub target: Target,
    pub metric: Option<String>,
    pub direction: Option<Better>,
}

/// Check `name` is a plain identifier.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::Input(format!(
            "invalid profile name '{name}': {why}; use letters, digits, '_' and '-', starting with a letter or digit, at most {MAX_NAME_LEN} characters"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return bad(&format!("'{c}' is not allowed"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it starts with a symbol");
    }
    // Only ASCII is left, so bytes are characters.
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("it has {} characters", name.len()));
    }
    Ok(())
}

/// Validate `new` completely, resolving defaults; touches no store.
fn resolve(new: NewProfile) -> Result<WorkloadProfile, Error> {
    validate_name(&new.name)?;
    if new.description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(Error::Input(format!(
            "the description is {} characters long; the limit is {MAX_DESCRIPTION_LEN}",
            new.description.chars().count()
        )));
    }
    let (target, info) = match new.target {
        Target::Command {
            argv,
            cwd,
            timeout_s,
        } => {
            let cwd = cwd.map(|d| check_cwd(&d)).transpose()?;
            check_program(&argv, cwd.as_deref())?;
            if !(1..=MAX_COMMAND_TIMEOUT_S).contains(&timeout_s) {
                return Err(Error::Input(format!(
                    "the per-run timeout must be between 1 and {MAX_COMMAND_TIMEOUT_S} seconds, got {timeout_s}"
                )));
            }
            let info = match new.metric.as_deref() {
                None | Some("wall_time") => WALL_TIME,
                Some(other) => {
                    return Err(Error::Input(format!(
                        "a command profile measures wall_time only, not '{other}'; lab workload metrics need --lab"
                    )))
                }
            };
            (
                Target::Command {
                    argv,
                    cwd,
                    timeout_s,
                },
                info,
            )
        }
        Target::Lab { workload } => {
            let info = lab_metric(&workload, new.metric.as_deref())?;
            (Target::Lab { workload }, info)
        }
    };
    Ok(WorkloadProfile {
        id: 0,
        name: new.name,
        description: new.description,
        target,
        metric: info.name.into(),
        unit: info.unit.into(),
        direction: new.direction.unwrap_or(info.better),
        created_at: String::new(),
    })
}

/// The metric `wanted` of `spec` (default: its primary), if this workload,
/// with these parameters, reports it.
fn lab_metric(spec: &WorkloadSpec, wanted: Option<&str>) -> Result<MetricInfo, Error> {
    let all = metrics_of(spec.kind);
    let Some(wanted) = wanted else {
        return Ok(all[0]);
    };
    let info = all.iter().find(|m| m.name == wanted).ok_or_else(|| {
        Error::Input(format!(
            "workload '{}' does not report a metric '{wanted}'; it reports: {}",
            spec.kind,
            all.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    // Batch reports per-class metrics only for classes it has jobs of.
    if spec.kind == WorkloadKind::Batch {
        for class in ["short", "long"] {
            if wanted.starts_with(&format!("{class}_")) && spec.int(class) == 0 {
                return Err(Error::Input(format!(
                    "'{wanted}' is measured over the {class} jobs, but this batch workload has {class}=0"
                )));
            }
        }
    }
    Ok(*info)
}

fn check_cwd(dir: &Path) -> Result<PathBuf, Error> {
    let abs = dir.canonicalize().map_err(|e| {
        Error::Input(format!(
            "working directory {} is not usable: {e}",
            dir.display()
        ))
    })?;
    if !abs.is_dir() {
        return Err(Error::Input(format!(
            "working directory {} is not a directory",
            dir.display()
        )));
    }
    if abs.to_str().is_none() {
        return Err(Error::Input(format!(
            "working directory {} is not valid UTF-8",
            abs.display()
        )));
    }
    Ok(abs)
}

/// The program must exist and be executable now; catching a typo at `add`
/// beats N failed runs later.
fn check_program(argv: &[String], cwd: Option<&Path>) -> Result<(), Error> {
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err(Error::Input(
            "the command is empty: a command profile needs at least the program to run".into(),
        ));
    };
    let path = if program.contains('/') {
        match cwd {
            Some(d) if Path::new(program).is_relative() => d.join(program),
            _ => PathBuf::from(program),
        }
    } else {
        crate::host::which(program)
            .ok_or_else(|| Error::Input(format!("program '{program}' not found on $PATH")))?
    };
    let executable =
        std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        return Err(Error::Input(format!(
            "'{}' is not an executable file",
            path.display()
        )));
    }
    Ok(())
}

/// Validate and store a new profile.
pub fn add(store: &mut Store, new: NewProfile) -> Result<WorkloadProfile, Error> {
    let p = resolve(new)?;
    let (argv, cwd, timeout_s, workload) = match &p.target {
        Target::Command {
            argv,
            cwd,
            timeout_s,
        } => (
            Some(serde_json::to_string(argv).context("encoding argv")?),
            cwd.as_ref().and_then(|d| d.to_str()).map(str::to_string),
            Some(i64::try_from(*timeout_s).context("timeout out of range")?),
            None,
        ),
        Target::Lab { workload } => (None, None, None, Some(workload.to_string())),
    };
    let id = store.write(|tx| -> Result<i64, Error> {
        if let Some(existing) = find(tx, &p.name)? {
            return Err(duplicate(&existing));
        }
        tx.execute(
            "INSERT INTO workload_profiles
               (name, description, target_kind, argv, cwd, timeout_s, workload,
                metric, unit, direction, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                     strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            params![
                p.name,
                p.description,
                p.target.kind(),
                argv,
                cwd,
                timeout_s,
                workload,
                p.metric,
                p.unit,
                direction_str(p.direction),
            ],
        )
        .map_err(|e| {
            if store::is_unique_violation(&e) {
                Error::Input(format!(
                    "a workload profile named '{}' already exists",
                    p.name
                ))
            } else {
                Error::Internal(anyhow!(e).context("storing the workload profile"))
            }
        })?;
        Ok(tx.last_insert_rowid())
    })?;
    get_by_id(store.conn(), id)?
        .ok_or_else(|| Error::Internal(anyhow!("profile {id} vanished after insert")))
}

fn duplicate(existing: &WorkloadProfile) -> Error {
    Error::Input(format!(
        "a workload profile named '{}' already exists (id {}, {}); remove it first (`schedcp observe workload remove {}`) or choose another name",
        existing.name,
        existing.id,
        existing.target.describe(),
        existing.name
    ))
}

/// Every profile, by name.
pub fn list(store: &Store) -> Result<Vec<WorkloadProfile>, Error> {
    let mut stmt = store
        .conn()
        .prepare(&format!("{SELECT} ORDER BY name"))
        .context("listing workload profiles")?;
    let rows = stmt
        .query_map([], RawProfile::from_row)
        .context("listing workload profiles")?;
    rows.map(|r| {
        r.context("reading a workload profile")
            .map_err(Error::Internal)
            .and_then(RawProfile::into_profile)
    })
    .collect()
}

/// The profile called `name`, or an error that says how to find one.
pub fn get(store: &Store, name: &str) -> Result<WorkloadProfile, Error> {
    find(store.conn(), name)?.ok_or_else(|| {
        Error::NotFound(format!(
            "no workload profile named '{name}'; `schedcp observe workload list` shows them, `schedcp observe workload add` creates one"
        ))
    })
}

/// The profile called `name`, if any.
pub fn find(conn: &Connection, name: &str) -> Result<Option<WorkloadProfile>, Error> {
    query_one(conn, &format!("{SELECT} WHERE name = ?1"), name)
}

/// The profile with id `id`, if any.
pub fn get_by_id(conn: &Connection, id: i64) -> Result<Option<WorkloadProfile>, Error> {
    query_one(conn, &format!("{SELECT} WHERE id = ?1"), id)
}

fn query_one(
    conn: &Connection,
    sql: &str,
    key: impl rusqlite::ToSql,
) -> Result<Option<WorkloadProfile>, Error> {
    conn.query_row(sql, [key], RawProfile::from_row)
        .optional()
        .context("reading a workload profile")?
        .map(RawProfile::into_profile)
        .transpose()
}

/// What [`remove`] deleted.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Removed {
    pub profile: WorkloadProfile,
    /// Benchmark run-sets deleted with it.
    pub run_sets: u64,
}

/// Delete the profile `name`. Its benchmark history goes with it, which is
/// refused unless `force`: history is the point of a profile.
pub fn remove(store: &mut Store, name: &str, force: bool) -> Result<Removed, Error> {
    let profile = get(store, name)?;
    let run_sets = store.write(|tx| -> Result<u64, Error> {
        let sets: i64 = tx
            .query_row(
                "SELECT count(*) FROM benchmark_sets WHERE profile_id = ?1",
                [profile.id],
                |r| r.get(0),
            )
            .context("counting benchmark history")?;
        if sets > 0 && !force {
            return Err(Error::Input(format!(
                "workload profile '{name}' has {sets} benchmark run-set(s); pass --force to delete them with it"
            )));
        }
        // Samples go with their sets (ON DELETE CASCADE).
        tx.execute(
            "DELETE FROM benchmark_sets WHERE profile_id = ?1",
            [profile.id],
        )
        .context("deleting benchmark history")?;
        tx.execute("DELETE FROM workload_profiles WHERE id = ?1", [profile.id])
            .context("deleting the workload profile")?;
        Ok(sets.unsigned_abs())
    })?;
    Ok(Removed { profile, run_sets })
}

pub(crate) fn direction_str(d: Better) -> &'static str {
    match d {
        Better::Lower => "lower",
        Better::Higher => "higher",
    }
}

const SELECT: &str = "SELECT id, name, description, target_kind, argv, cwd, timeout_s, workload,
                             metric, unit, direction, created_at
                      FROM workload_profiles";

/// A row as stored, before its columns are decoded.
struct RawProfile {
    id: i64,
    name: String,
    description: String,
    target_kind: String,
    argv: Option<String>,
    cwd: Option<String>,
    timeout_s: Option<i64>,
    workload: Option<String>,
    metric: String,
    unit: String,
    direction: String,
    created_at: String,
}

impl RawProfile {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawProfile> {
        Ok(RawProfile {
            id: r.get(0)?,
            name: r.get(1)?,
            description: r.get(2)?,
            target_kind: r.get(3)?,
            argv: r.get(4)?,
            cwd: r.get(5)?,
            timeout_s: r.get(6)?,
            workload: r.get(7)?,
            metric: r.get(8)?,
            unit: r.get(9)?,
            direction: r.get(10)?,
            created_at: r.get(11)?,
        })
    }

    fn into_profile(self) -> Result<WorkloadProfile, Error> {
        let name = self.name;
        let corrupt = |what: String| {
            Error::Internal(anyhow!(
                "stored workload profile '{name}' is unreadable: {what}; remove and re-add it"
            ))
        };
        let target = match (
            self.target_kind.as_str(),
            self.argv,
            self.timeout_s,
            self.workload,
        ) {
            ("command", Some(argv), Some(timeout_s), _) => Target::Command {
                argv: serde_json::from_str(&argv).map_err(|e| corrupt(format!("argv: {e}")))?,
                cwd: self.cwd.map(PathBuf::from),
                timeout_s: timeout_s.unsigned_abs(),
            },
            // Re-parsed rather than deserialized: a workload that gained a
            // parameter since gets its default, one that lost a parameter
            // fails here with the parser's precise message.
            ("lab", _, _, Some(spec)) => Target::Lab {
                workload: spec
                    .parse()
                    .map_err(|e| corrupt(format!("workload '{spec}': {e}")))?,
            },
            (kind, ..) => return Err(corrupt(format!("target kind '{kind}'"))),
        };
        let direction = match self.direction.as_str() {
            "lower" => Better::Lower,
            "higher" => Better::Higher,
            other => return Err(corrupt(format!("direction '{other}'"))),
        };
        Ok(WorkloadProfile {
            id: self.id,
            name,
            description: self.description,
            target,
            metric: self.metric,
            unit: self.unit,
            direction,
            created_at: self.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(argv: &[&str]) -> NewProfile {
        NewProfile {
            name: "build".into(),
            description: "a build".into(),
            target: Target::Command {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                cwd: None,
                timeout_s: 60,
            },
            metric: None,
            direction: None,
        }
    }

    fn lab(name: &str, spec: &str, metric: Option<&str>) -> Result<NewProfile, Error> {
        Ok(NewProfile {
            name: name.into(),
            description: String::new(),
            target: Target::lab(spec)?,
            metric: metric.map(str::to_string),
            direction: None,
        })
    }

    fn input_error(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::Input(m) | Error::NotFound(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn metric_table_matches_the_workloads_primary_metrics() {
        // The guest reports these as `primary` (see the workloads' report()).
        assert_eq!(metrics_of(WorkloadKind::Batch)[0].name, "makespan");
        assert_eq!(
            metrics_of(WorkloadKind::Wakeup)[0].name,
            "p99_wakeup_latency"
        );
        assert_eq!(metrics_of(WorkloadKind::Pingpong)[0].name, "total_time");
        for kind in WorkloadKind::ALL {
            let names: Vec<_> = metrics_of(kind).iter().map(|m| m.name).collect();
            let mut dedup = names.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(names.len(), dedup.len(), "{kind}");
        }
    }

    #[test]
    fn add_list_show_remove() {
        let mut s = Store::open_in_memory().unwrap();
        let p = add(&mut s, command(&["true"])).unwrap();
        assert_eq!(p.name, "build");
        assert_eq!((p.metric.as_str(), p.unit.as_str()), ("wall_time", "ms"));
        assert_eq!(p.direction, Better::Lower);
        assert!(p.created_at.ends_with('Z'), "{}", p.created_at);

        let l = add(
            &mut s,
            lab("lat", "wakeup:workers=8", Some("requests_per_s")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            l.direction,
            Better::Higher,
            "from the metric's own direction"
        );
        assert_eq!(l.unit, "requests/s");
        let Target::Lab { workload } = &l.target else {
            panic!("{:?}", l.target)
        };
        assert_eq!(workload.int("workers"), 8);

        let names: Vec<_> = list(&s).unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["build", "lat"]);
        assert_eq!(get(&s, "lat").unwrap(), l);

        let r = remove(&mut s, "build", false).unwrap();
        assert_eq!((r.profile.id, r.run_sets), (p.id, 0));
        assert!(input_error(get(&s, "build")).contains("no workload profile named 'build'"));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut s = Store::open_in_memory().unwrap();
        add(&mut s, command(&["true"])).unwrap();
        let m = input_error(add(&mut s, command(&["false"])));
        assert!(m.contains("'build' already exists"), "{m}");
        assert_eq!(list(&s).unwrap().len(), 1);
    }

    #[test]
    fn names_are_plain_identifiers() {
        for ok in ["a", "build-2", "p99_lat", &"x".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("has space", "' ' is not allowed"),
            ("-flag", "starts with a symbol"),
            ("é", "'é' is not allowed"),
            (&"x".repeat(65), "65 characters"),
        ] {
            let m = input_error(validate_name(bad));
            assert!(m.contains(why), "{bad}: {m}");
        }
    }

    #[test]
    fn command_targets_are_checked() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(input_error(add(&mut s, command(&[]))).contains("command is empty"));
        assert!(input_error(add(&mut s, command(&[""]))).contains("command is empty"));
        assert!(input_error(add(&mut s, command(&["no-such-program-xyz"])))
            .contains("'no-such-program-xyz' not found on $PATH"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.txt");
        std::fs::write(&data, "not a program").unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(input_error(add(&mut s, command(&[data.to_str().unwrap()])))
            .contains("not an executable file"));
        assert!(
            input_error(add(&mut s, command(&[dir.path().to_str().unwrap()])))
                .contains("not an executable file")
        );
        let mut p = command(&["true"]);
        p.metric = Some("makespan".into());
        assert!(input_error(add(&mut s, p)).contains("wall_time only"));
        let mut p = command(&["true"]);
        p.target = Target::Command {
            argv: vec!["true".into()],
            cwd: Some("/no/such/dir".into()),
            timeout_s: 10,
        };
        assert!(input_error(add(&mut s, p)).contains("/no/such/dir"));
        let mut p = command(&["true"]);
        p.target = Target::Command {
            argv: vec!["true".into()],
            cwd: None,
            timeout_s: 0,
        };
        assert!(input_error(add(&mut s, p)).contains("timeout"));
        assert!(list(&s).unwrap().is_empty());
    }

    #[test]
    fn relative_programs_resolve_against_the_profile_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("bench.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = Store::open_in_memory().unwrap();
        let mut p = command(&["./bench.sh"]);
        p.target = Target::Command {
            argv: vec!["./bench.sh".into()],
            cwd: Some(dir.path().to_path_buf()),
            timeout_s: 10,
        };
        let stored = add(&mut s, p).unwrap();
        let Target::Command { cwd, .. } = stored.target else {
            panic!()
        };
        assert_eq!(cwd.unwrap(), dir.path().canonicalize().unwrap());
    }

    #[test]
    fn lab_targets_are_checked() {
        assert!(input_error(Target::lab("nosuch")).contains("unknown workload 'nosuch'"));
        assert!(input_error(Target::lab("batch:bogus=1")).contains("no parameter 'bogus'"));
        let mut s = Store::open_in_memory().unwrap();
        let m = input_error(add(
            &mut s,
            lab("b", "batch", Some("p99_wakeup_latency")).unwrap(),
        ));
        assert!(
            m.contains("workload 'batch' does not report a metric 'p99_wakeup_latency'")
                && m.contains("makespan, mean_completion"),
            "{m}"
        );
        let m = input_error(add(
            &mut s,
            lab("b", "batch:short=0", Some("short_p90_completion")).unwrap(),
        ));
        assert!(m.contains("short=0"), "{m}");
        // The default metric is the workload's primary one.
        let p = add(&mut s, lab("pp", "pingpong", None).unwrap()).unwrap();
        assert_eq!(
            (p.metric.as_str(), p.direction),
            ("total_time", Better::Lower)
        );
    }

    #[test]
    fn removing_a_profile_with_history_needs_force() {
        let mut s = Store::open_in_memory().unwrap();
        let p = add(&mut s, command(&["true"])).unwrap();
        s.write(|tx| -> anyhow::Result<()> {
            tx.execute(
                "INSERT INTO benchmark_sets (profile_id, started_at, finished_at, label, host_kernel, runs)
                 VALUES (?1, 'a', 'b', 'default', 'k', 1)",
                [p.id],
            )?;
            tx.execute(
                "INSERT INTO benchmark_samples (set_id, seq, value, elapsed_ms) VALUES (?1, 0, 1.0, 1.0)",
                [tx.last_insert_rowid()],
            )?;
            Ok(())
        })
        .unwrap();
        let m = input_error(remove(&mut s, "build", false));
        assert!(m.contains("1 benchmark run-set(s); pass --force"), "{m}");
        assert_eq!(list(&s).unwrap().len(), 1, "nothing removed");
        let r = remove(&mut s, "build", true).unwrap();
        assert_eq!(r.run_sets, 1);
        let samples: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM benchmark_samples", [], |r| r.get(0))
            .unwrap();
        assert_eq!(samples, 0);
    }

    #[test]
    fn describe_quotes_for_the_shell() {
        let t = Target::Command {
            argv: vec!["sh".into(), "-c".into(), "echo 'hi' $X".into()],
            cwd: None,
            timeout_s: 1,
        };
        assert_eq!(t.describe(), r#"sh -c 'echo '\''hi'\'' $X'"#);
    }
}
