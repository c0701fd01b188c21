//! The matrix file (TOML): named topologies, filesystems, machines, suites
//! and scenarios, `[[cells]]` tables whose product gives the cells, and
//! `[[exclude]]` tables that take some out. Every cell has a stable id.
//! Unknown keys, unknown names, unknown values and a cell that cannot run
//! are refused before anything boots, naming the file, the line and the
//! key.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::{DaxMode, Mkfs};
use serde::Deserialize;
use toml::Spanned;

use crate::build::kernel::Variant;
use crate::cli::{parse_dax_modes, parse_param, parse_size, Persistence};
use crate::vm::pmem::{self, Geometry, PmemKind};

pub use crate::report::known::{Axes, AXES};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Topology {
    /// The kind of persistent memory (nfit or virtio); absent: nfit.
    #[serde(default)]
    pub pmem: PmemKind,
    #[serde(default = "two")]
    pub nvdimms: u32,
    #[serde(default = "one_gig")]
    pub size: String,
    #[serde(default = "zero")]
    pub label_size: String,
    /// QEMU's nvdimm-persistence (mem-ctrl or cpu); absent: not advertised.
    #[serde(default)]
    pub persistence: Option<Persistence>,
}

fn two() -> u32 {
    2
}
fn one_gig() -> String {
    "1G".into()
}
fn zero() -> String {
    "0".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Filesystem {
    /// `dax=` per NVDIMM, as `--dax` takes it ("always,never").
    #[serde(default = "always_never")]
    pub dax: String,
    /// mkfs.xfs -m reflink= (default on).
    #[serde(default = "yes")]
    pub reflink: bool,
    /// mkfs.xfs -m rmapbt= (default on).
    #[serde(default = "yes")]
    pub rmapbt: bool,
}

fn yes() -> bool {
    true
}

fn always_never() -> String {
    "always,never".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Machine {
    #[serde(default = "memory")]
    pub memory: u64,
    #[serde(default = "one")]
    pub cpus: u32,
}

fn memory() -> u64 {
    1024
}
fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Suite {
    /// Empty: the default set.
    #[serde(default)]
    pub workloads: Vec<Spanned<String>>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepSpec {
    pub kernel: Spanned<String>,
    pub workloads: Vec<Spanned<String>>,
    /// SIGKILL QEMU when a results line ends with this.
    #[serde(default)]
    pub kill_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CrashSpec {
    pub kernel: Spanned<String>,
    pub points: u32,
    pub seed: u64,
    #[serde(default = "records")]
    pub records: u64,
}

fn records() -> u64 {
    4096
}

/// fstests on the cell's kernels (default patched and baseline), compared:
/// `cargo xtask fstests` as a cell. The checkout comes from
/// `--fstests-src` or DAX_SEAL_FSTESTS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FstestsSpec {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub tests: Vec<String>,
    /// The project's cases for the seal (`cargo xtask fstests --seal-cases`).
    #[serde(default)]
    pub seal_cases: bool,
    #[serde(default)]
    pub sections: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A sequence of boots on one image set, or a crash campaign.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScenarioSpec {
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub crash: Option<CrashSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CellsSpec {
    #[serde(default)]
    pub kernels: Vec<Spanned<String>>,
    #[serde(default)]
    pub topologies: Vec<Spanned<String>>,
    #[serde(default)]
    pub filesystems: Vec<Spanned<String>>,
    #[serde(default)]
    pub machines: Vec<Spanned<String>>,
    #[serde(default)]
    pub suites: Vec<Spanned<String>>,
    #[serde(default)]
    pub scenarios: Vec<Spanned<String>>,
    #[serde(default)]
    pub fstests: Vec<Spanned<String>>,
    /// Seconds one cell takes under TCG, when no earlier result says.
    pub weight: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Exclude {
    pub kernel: Option<String>,
    pub topology: Option<String>,
    pub filesystem: Option<String>,
    pub machine: Option<String>,
    pub suite: Option<String>,
    pub scenario: Option<String>,
    pub fstests: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MatrixFile {
    #[serde(default)]
    pub topologies: BTreeMap<String, Topology>,
    #[serde(default)]
    pub filesystems: BTreeMap<String, Filesystem>,
    #[serde(default)]
    pub machines: BTreeMap<String, Machine>,
    #[serde(default)]
    pub suites: BTreeMap<String, Suite>,
    #[serde(default)]
    pub scenarios: BTreeMap<String, ScenarioSpec>,
    #[serde(default)]
    pub fstests: BTreeMap<String, FstestsSpec>,
    pub cells: Vec<CellsSpec>,
    #[serde(default)]
    pub exclude: Vec<Exclude>,
}

/// What a cell runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// One boot of one kernel with these workloads and parameters.
    Suite { kernel: Variant, workloads: Vec<String>, params: BTreeMap<String, String> },
    /// Boots in order on one image set.
    Steps(Vec<Step>),
    /// A userspace-flush crash campaign.
    Crash { kernel: Variant, points: u32, seed: u64, records: u64 },
    /// fstests on each kernel, each on its own images, then compared.
    Fstests { kernels: Vec<Variant>, plans: BTreeMap<String, dax_seal_protocol::fstests::Plan> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kernel: Variant,
    pub workloads: Vec<String>,
    pub kill_at: Option<String>,
}

/// One runnable cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// `suite-or-scenario.kernel.topology.filesystem.machine` (no kernel
    /// part for scenarios, whose steps name theirs).
    pub id: String,
    pub work: Work,
    pub geometry: Geometry,
    pub pmem: PmemKind,
    pub nvdimms: u32,
    pub persistence: Option<Persistence>,
    pub dax: Vec<DaxMode>,
    pub mkfs: Mkfs,
    pub memory: u64,
    pub cpus: u32,
    pub weight: u64,
    /// Its names on the matrix's axes ([`AXES`]).
    pub axes: Axes,
}

impl Cell {
    /// The kernel variants the cell boots.
    pub fn kernels(&self) -> Vec<Variant> {
        let mut v = match &self.work {
            Work::Suite { kernel, .. } | Work::Crash { kernel, .. } => vec![*kernel],
            Work::Steps(steps) => steps.iter().map(|s| s.kernel).collect(),
            Work::Fstests { kernels, .. } => kernels.clone(),
        };
        v.sort_by_key(|k| k.name());
        v.dedup();
        v
    }
}

/// `file:line` of a byte offset.
fn at(file: &Path, text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("{}:{line}", file.display())
}

fn variant(name: &str) -> Option<Variant> {
    [Variant::Patched, Variant::Baseline, Variant::Debug].into_iter().find(|v| v.name() == name)
}

/// Reads and checks a matrix file; returns its cells in a stable order.
pub fn load(file: &Path) -> Result<Vec<Cell>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the matrix file {}", file.display()))?;
    parse(file, &text)
}

pub fn parse(file: &Path, text: &str) -> Result<Vec<Cell>> {
    let spec: MatrixFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| at(file, text, s.start)).unwrap_or_else(|| file.display().to_string());
        anyhow::anyhow!("{line}: {}", e.message())
    })?;
    let name_in = |what: &str, key: &str, name: &Spanned<String>, known: Vec<&String>| -> Result<()> {
        if known.iter().any(|k| **k == *name.get_ref()) {
            return Ok(());
        }
        let names: Vec<String> = known.iter().map(|k| k.to_string()).collect();
        bail!(
            "{}: {key}: unknown {what} {:?}; the file defines: {}",
            at(file, text, name.span().start),
            name.get_ref(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )
    };
    let mut cells = Vec::new();
    for group in &spec.cells {
        let where_ = |s: &Spanned<String>| at(file, text, s.span().start);
        let kinds = [&group.suites, &group.scenarios, &group.fstests].iter().filter(|v| !v.is_empty()).count();
        if kinds != 1 {
            let first = group.kernels.first().or(group.topologies.first()).map_or(file.display().to_string(), where_);
            bail!("{first}: a [[cells]] table names one of suites, scenarios or fstests");
        }
        for k in &group.kernels {
            if variant(k.get_ref()).is_none() {
                bail!("{}: kernels: unknown kernel {:?}; give patched, baseline or debug", where_(k), k.get_ref());
            }
        }
        for t in &group.topologies {
            name_in("topology", "topologies", t, spec.topologies.keys().collect())?;
        }
        for f in &group.filesystems {
            name_in("filesystem", "filesystems", f, spec.filesystems.keys().collect())?;
        }
        for m in &group.machines {
            name_in("machine", "machines", m, spec.machines.keys().collect())?;
        }
        for s in &group.suites {
            name_in("suite", "suites", s, spec.suites.keys().collect())?;
        }
        for s in &group.scenarios {
            name_in("scenario", "scenarios", s, spec.scenarios.keys().collect())?;
        }
        for s in &group.fstests {
            name_in("fstests table", "fstests", s, spec.fstests.keys().collect())?;
        }
        let or_default = |v: &Vec<Spanned<String>>| -> Vec<Option<Spanned<String>>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().cloned().map(Some).collect()
            }
        };
        let works: Vec<(String, Spanned<String>, Kind)> = group
            .suites
            .iter()
            .map(|s| (s.get_ref().clone(), s.clone(), Kind::Suite))
            .chain(group.scenarios.iter().map(|s| (s.get_ref().clone(), s.clone(), Kind::Scenario)))
            .chain(group.fstests.iter().map(|s| (s.get_ref().clone(), s.clone(), Kind::Fstests)))
            .collect();
        for (work_name, work_at, kind) in &works {
            let is_suite = *kind == Kind::Suite;
            let kernels: Vec<Option<Spanned<String>>> =
                if is_suite { group.kernels.iter().cloned().map(Some).collect() } else { vec![None] };
            if is_suite && kernels.is_empty() {
                bail!("{}: suites need kernels = [...] in the same [[cells]] table", where_(work_at));
            }
            for kernel in &kernels {
                for topology in or_default(&group.topologies) {
                    for filesystem in or_default(&group.filesystems) {
                        for machine in or_default(&group.machines) {
                            let names = Names {
                                work: work_name,
                                kernel: kernel.as_ref().map(|k| k.get_ref().as_str()),
                                topology: topology.as_ref().map_or("default", |t| t.get_ref()),
                                filesystem: filesystem.as_ref().map_or("default", |f| f.get_ref()),
                                machine: machine.as_ref().map_or("default", |m| m.get_ref()),
                                kind: *kind,
                            };
                            if spec.exclude.iter().any(|x| names.excluded_by(x)) {
                                continue;
                            }
                            let cell = build_cell(&spec, &names, &group.kernels, group.weight)
                                .map_err(|e| anyhow::anyhow!("{}: cell {}: {e}", where_(work_at), names.id()))?;
                            cells.push(cell);
                        }
                    }
                }
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &cells {
        if !seen.insert(c.id.clone()) {
            bail!("{}: cell {} is produced by two [[cells]] tables", file.display(), c.id);
        }
    }
    if cells.is_empty() {
        bail!("{}: the matrix has no cells (every one excluded?)", file.display());
    }
    Ok(cells)
}

struct Names<'a> {
    work: &'a str,
    kernel: Option<&'a str>,
    topology: &'a str,
    filesystem: &'a str,
    machine: &'a str,
    kind: Kind,
}

/// What a [[cells]] table's work names are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Suite,
    Scenario,
    Fstests,
}

impl Names<'_> {
    fn id(&self) -> String {
        let fstests = format!("fstests-{}", self.work);
        let mut parts = vec![if self.kind == Kind::Fstests { fstests.as_str() } else { self.work }];
        parts.extend(self.kernel);
        parts.extend([self.topology, self.filesystem, self.machine]);
        parts.join(".")
    }

    fn axes(&self) -> Axes {
        let work = match self.kind {
            Kind::Suite => "suite",
            Kind::Scenario => "scenario",
            Kind::Fstests => "fstests",
        };
        let mut axes: Axes = [
            (work, self.work),
            ("topology", self.topology),
            ("filesystem", self.filesystem),
            ("machine", self.machine),
        ]
        .into_iter()
        .map(|(a, n)| (a, n.to_string()))
        .collect();
        if let Some(k) = self.kernel {
            axes.insert("kernel", k.to_string());
        }
        axes
    }

    fn excluded_by(&self, x: &Exclude) -> bool {
        let matches = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
        matches(&x.kernel, self.kernel)
            && matches(&x.topology, Some(self.topology))
            && matches(&x.filesystem, Some(self.filesystem))
            && matches(&x.machine, Some(self.machine))
            && matches(&x.suite, (self.kind == Kind::Suite).then_some(self.work))
            && matches(&x.scenario, (self.kind == Kind::Scenario).then_some(self.work))
            && matches(&x.fstests, (self.kind == Kind::Fstests).then_some(self.work))
    }
}

fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_workloads(names: &[Spanned<String>]) -> Result<Vec<String>, String> {
    let names: Vec<String> = names.iter().map(|w| w.get_ref().clone()).collect();
    crate::run::select_workloads(&names).map_err(|e| format!("{e:#}"))
}

fn build_cell(spec: &MatrixFile, n: &Names, kernels: &[Spanned<String>], weight: u64) -> Result<Cell, String> {
    let default_topology =
        Topology { pmem: PmemKind::Nfit, nvdimms: 2, size: one_gig(), label_size: zero(), persistence: None };
    let topology = spec.topologies.get(n.topology).unwrap_or(&default_topology);
    let default_fs = Filesystem { dax: always_never(), reflink: true, rmapbt: true };
    let fs = spec.filesystems.get(n.filesystem).unwrap_or(&default_fs);
    let default_machine = Machine { memory: memory(), cpus: one() };
    let machine = spec.machines.get(n.machine).unwrap_or(&default_machine);
    let size = parse_size(&topology.size).map_err(|e| format!("topology {}: size: {e}", n.topology))?;
    let label_size =
        parse_size(&topology.label_size).map_err(|e| format!("topology {}: label-size: {e}", n.topology))?;
    let geometry = Geometry { size, label_size };
    pmem::validate(geometry).map_err(|e| format!("topology {}: {e:#}", n.topology))?;
    pmem::validate_kind(topology.pmem, geometry, topology.persistence.is_some())
        .map_err(|e| format!("topology {}: {e:#}", n.topology))?;
    if topology.nvdimms == 0 || topology.nvdimms > 8 {
        return Err(format!("topology {}: nvdimms = {}: give 1 to 8", n.topology, topology.nvdimms));
    }
    let dax = parse_dax_modes(&fs.dax).map_err(|e| format!("filesystem {}: dax: {e}", n.filesystem))?.0;
    if !(256..=65536).contains(&machine.memory) || !(1..=64).contains(&machine.cpus) {
        return Err(format!("machine {}: memory 256 to 65536 MiB and cpus 1 to 64", n.machine));
    }
    let work = if n.kind == Kind::Fstests {
        let f = &spec.fstests[n.work];
        let mut variants = Vec::new();
        for k in kernels {
            variants.push(variant(k.get_ref()).ok_or_else(|| format!("kernels: {:?} is not a kernel", k.get_ref()))?);
        }
        if variants.is_empty() {
            variants = vec![Variant::Patched, Variant::Baseline];
        }
        if topology.nvdimms != 2 {
            return Err(format!("fstests {}: needs a topology of two NVDIMMs (TEST_DEV, SCRATCH_DEV)", n.work));
        }
        for t in &f.exclude {
            dax_seal_protocol::fstests::check_test(t).map_err(|e| format!("fstests {}: exclude: {e}", n.work))?;
        }
        let mut tests = f.tests.clone();
        if f.seal_cases {
            let cases = crate::build::rootfs::project_cases().map_err(|e| format!("fstests {}: {e:#}", n.work))?;
            tests.extend(cases.into_iter().filter(|c| !f.tests.contains(c)));
        }
        let plans = crate::fstests::plans(&f.groups, &tests, &f.sections, &f.exclude)
            .map_err(|e| format!("fstests {}: {e:#}", n.work))?;
        Work::Fstests { kernels: variants, plans }
    } else if n.kind == Kind::Suite {
        let suite = &spec.suites[n.work];
        let kernel = n.kernel.and_then(variant).ok_or("a suite cell needs a kernel")?;
        let workloads = check_workloads(&suite.workloads).map_err(|e| format!("suite {}: {e}", n.work))?;
        let mut params = BTreeMap::new();
        for (name, value) in &suite.params {
            let (k, v) = parse_param(&format!("{name}={}", param_text(value.get_ref())))
                .map_err(|e| format!("suite {}: params: {e}", n.work))?;
            params.insert(k, v);
        }
        Work::Suite { kernel, workloads, params }
    } else {
        let scenario = &spec.scenarios[n.work];
        match (&scenario.crash, scenario.steps.is_empty()) {
            (Some(c), true) => {
                let kernel = variant(c.kernel.get_ref()).ok_or_else(|| {
                    format!("scenario {}: crash.kernel {:?} is not a kernel", n.work, c.kernel.get_ref())
                })?;
                if c.points == 0 {
                    return Err(format!("scenario {}: crash.points must be at least 1", n.work));
                }
                Work::Crash { kernel, points: c.points, seed: c.seed, records: c.records }
            }
            (None, false) => {
                let mut steps = Vec::new();
                for s in &scenario.steps {
                    let kernel = variant(s.kernel.get_ref()).ok_or_else(|| {
                        format!("scenario {}: steps.kernel {:?} is not a kernel", n.work, s.kernel.get_ref())
                    })?;
                    if s.workloads.is_empty() {
                        return Err(format!("scenario {}: every step names its workloads", n.work));
                    }
                    let workloads = check_workloads(&s.workloads).map_err(|e| format!("scenario {}: {e}", n.work))?;
                    steps.push(Step { kernel, workloads, kill_at: s.kill_at.clone() });
                }
                Work::Steps(steps)
            }
            _ => return Err(format!("scenario {}: give either steps or crash", n.work)),
        }
    };
    Ok(Cell {
        id: n.id(),
        work,
        geometry,
        pmem: topology.pmem,
        nvdimms: topology.nvdimms,
        persistence: topology.persistence,
        dax,
        mkfs: Mkfs { reflink: fs.reflink, rmapbt: fs.rmapbt },
        memory: machine.memory,
        cpus: machine.cpus,
        weight,
        axes: n.axes(),
    })
}
