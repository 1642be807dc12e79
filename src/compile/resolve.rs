//! Name resolution: every reference in a pipeline → the step or dataset it means.
//!
//! In: a lowered [`Pipeline`]. Out: [`Resolved`] (what each reference points at)
//! and the graph diagnostics: duplicate names, unknown references with "did you
//! mean", references to the wrong kind of step, cycles, estimators against target
//! kinds, metrics against tasks, outputs that overwrite inputs or each other, and
//! steps that reach no output (warnings).
//! Must not: do I/O or look at columns (that is `schema`).

use crate::frontend::diag::{Code, Diagnostic, suggest};
use crate::frontend::pipeline::*;
use crate::frontend::span::Span;
use std::collections::{BTreeMap, BTreeSet};

use crate::data::split::Part;

/// A dataset: rows with columns.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Dataset {
    Source(usize),
    Transform(usize),
    Part { split: usize, part: Part },
}

/// What a data reference means.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DataTarget {
    Dataset(Dataset),
    /// A split as a whole: k-fold (cross-validation) or shards (per-shard models, matrix).
    Split(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StepKind {
    Source,
    Transform,
    Split,
    Model,
    Evaluation,
    Output,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Source => "source",
            StepKind::Transform => "transform",
            StepKind::Split => "split",
            StepKind::Model => "model",
            StepKind::Evaluation => "evaluation",
            StepKind::Output => "output",
        }
    }
}

/// Resolved references, indexed like the pipeline's sections.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    /// The dataset output each source reads back, if any (it runs after it).
    pub source_after: Vec<Option<usize>>,
    pub transform_inputs: Vec<Option<Dataset>>,
    /// Inputs of each split: one, or train and test for a predefined pair.
    pub split_inputs: Vec<Vec<Dataset>>,
    pub model_inputs: Vec<Option<DataTarget>>,
    pub eval_models: Vec<Option<usize>>,
    pub eval_data: Vec<Vec<DataTarget>>,
    /// Per output: the model, evaluations and dataset it names.
    pub output_models: Vec<Option<usize>>,
    pub output_evals: Vec<Vec<usize>>,
    pub output_data: Vec<Option<Dataset>>,
    /// The task of each model, where it can be known before the data.
    pub model_tasks: Vec<Option<Problem>>,
}

struct Names<'p> {
    map: BTreeMap<&'p str, (StepKind, usize, Span)>,
    /// Steps in the file that could not be lowered: already reported, so a
    /// reference to one is not reported again.
    broken: BTreeSet<&'p str>,
    /// Names defined more than once (already reported).
    duplicates: BTreeSet<&'p str>,
}

/// E0310 for a pipeline that would compute nothing (no evaluation, no
/// output); `None` when it has something to run. Reported only for a file
/// with no other error: a step that failed to lower may have been its output.
pub fn nothing_to_run(p: &Pipeline) -> Option<Diagnostic> {
    if !(p.evaluations.is_empty() && p.outputs.is_empty() && p.broken.is_empty()) {
        return None;
    }
    let empty = p.sources.is_empty()
        && p.transforms.is_empty()
        && p.splits.is_empty()
        && p.models.is_empty();
    Some(
        Diagnostic::new(
            Code::NothingToRun,
            p.name.span,
            if empty {
                "the pipeline has no steps: there is nothing to run"
            } else {
                "the pipeline has no evaluation and no output: there is nothing to run"
            },
        )
        .with_help(
            "add an `[evaluations.NAME]` or an `[outputs.NAME]` that uses the pipeline's steps",
        ),
    )
}

pub fn resolve(p: &Pipeline) -> (Resolved, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut names = Names {
        map: BTreeMap::new(),
        broken: p.broken.iter().map(|b| b.name.value.as_str()).collect(),
        duplicates: BTreeSet::new(),
    };
    let sections: [(StepKind, Vec<&Name>); 6] = [
        (
            StepKind::Source,
            p.sources.iter().map(|s| &s.name).collect(),
        ),
        (
            StepKind::Transform,
            p.transforms.iter().map(|s| &s.name).collect(),
        ),
        (StepKind::Split, p.splits.iter().map(|s| &s.name).collect()),
        (StepKind::Model, p.models.iter().map(|s| &s.name).collect()),
        (
            StepKind::Evaluation,
            p.evaluations.iter().map(|s| &s.name).collect(),
        ),
        (
            StepKind::Output,
            p.outputs.iter().map(|s| &s.name).collect(),
        ),
    ];
    for (kind, list) in &sections {
        for (i, n) in list.iter().enumerate() {
            if let Some((k0, _, s0)) = names.map.get(n.value.as_str()) {
                let d = Diagnostic::new(
                    Code::DuplicateName,
                    n.span,
                    format!("`{}` is already the name of a {}", n.value, k0.name()),
                )
                .with_help(format!(
                    "rename this {}: every step needs its own name",
                    kind.name()
                ))
                .with_related(
                    *s0,
                    format!("the {} `{}` is defined here", k0.name(), n.value),
                );
                diags.push(d);
                names.duplicates.insert(n.value.as_str());
            } else {
                names.map.insert(n.value.as_str(), (*kind, i, n.span));
            }
        }
    }

    let mut r = Resolved::default();
    let cx = Cx {
        p,
        names: &names,
        meant: Default::default(),
        unresolved: Default::default(),
    };
    for t in &p.transforms {
        r.transform_inputs
            .push(cx.dataset(&t.input, &mut diags, "a transform"));
    }
    for s in &p.splits {
        let inputs: Vec<Dataset> = match &s.kind {
            SplitKind::Holdout { input, .. }
            | SplitKind::KFold { input, .. }
            | SplitKind::Shards { input, .. } => cx
                .dataset(input, &mut diags, "a split")
                .into_iter()
                .collect(),
            SplitKind::Predefined {
                from: PredefinedFrom::Pair { train, test },
            } => [train, test]
                .into_iter()
                .filter_map(|x| cx.dataset(x, &mut diags, "a split"))
                .collect(),
            SplitKind::Predefined {
                from: PredefinedFrom::Source(input),
            } => {
                let d = cx.dataset(input, &mut diags, "a split");
                if let Some(Dataset::Source(i)) = &d {
                    let ok = matches!(
                        p.sources[*i].kind,
                        SourceKind::Mnist {
                            subset: MnistSubset::All,
                            ..
                        }
                    );
                    if !ok {
                        diags.push(
                            Diagnostic::new(
                                Code::WrongStepKind,
                                input.span,
                                format!("source `{}` has no predefined train and test parts", input.value),
                            )
                            .with_help("only an MNIST source with subset = \"all\" carries them; otherwise give `train` and `test`"),
                        );
                    }
                } else if d.is_some() {
                    diags.push(
                        Diagnostic::new(
                            Code::WrongStepKind,
                            input.span,
                            format!("`{}` has no predefined train and test parts", input.value),
                        )
                        .with_help("name an MNIST source, or give `train` and `test`"),
                    );
                }
                d.into_iter().collect()
            }
        };
        r.split_inputs.push(inputs);
    }
    for m in &p.models {
        let target = cx.data_target(&m.input, &mut diags, "a model");
        let target = match target {
            Some(DataTarget::Split(i)) => {
                let is_shards = matches!(p.splits[i].kind, SplitKind::Shards { .. });
                if !m.per_shard || !is_shards {
                    let help = if is_shards {
                        format!(
                            "set `per_shard = true` to fit one model per shard, or name one part, like `{}.train`",
                            m.input.value
                        )
                    } else {
                        format!(
                            "fit on one part, like `{}.{}`",
                            m.input.value,
                            first_part(&p.splits[i].kind)
                        )
                    };
                    diags.push(
                        Diagnostic::new(
                            Code::WrongStepKind,
                            m.input.span,
                            format!(
                                "model `{}` is fitted on the whole split `{}`",
                                m.name.value, m.input.value
                            ),
                        )
                        .with_help(help),
                    );
                    None
                } else {
                    Some(DataTarget::Split(i))
                }
            }
            Some(DataTarget::Dataset(d)) => {
                if m.per_shard {
                    diags.push(
                        Diagnostic::new(Code::WrongStepKind, m.input.span, format!("per-shard model `{}` needs a shards split as input, found a dataset", m.name.value))
                            .with_help("name a split of kind \"shards\", or remove `per_shard`"),
                    );
                    None
                } else {
                    Some(DataTarget::Dataset(d))
                }
            }
            None => None,
        };
        r.model_inputs.push(target);
        r.model_tasks.push(cx.model_task(m, &mut diags));
    }
    for e in &p.evaluations {
        let model = cx.step(&e.model, StepKind::Model, &mut diags);
        r.eval_models.push(model);
        let mut data = Vec::new();
        for d in &e.data {
            match cx.data_target(d, &mut diags, "an evaluation") {
                Some(DataTarget::Split(i)) => {
                    let ok = match &p.splits[i].kind {
                        SplitKind::KFold { .. } => true,
                        SplitKind::Shards { .. } => {
                            // A model that could not be lowered may well be per-shard.
                            model.is_some_and(|m| p.models[m].per_shard)
                                || cx.names.broken.contains(e.model.value.as_str())
                        }
                        _ => false,
                    };
                    if ok {
                        data.push(DataTarget::Split(i));
                    } else {
                        diags.push(
                            Diagnostic::new(Code::WrongStepKind, d.span, format!("cannot evaluate on the whole split `{}`", d.value))
                                .with_help(format!("name one part, like `{}.{}`; a kfold split cross-validates and a shards split scores a per-shard model on every shard", d.value, first_part(&p.splits[i].kind))),
                        );
                    }
                }
                Some(t) => data.push(t),
                None => {}
            }
        }
        r.eval_data.push(data);
        if let (Some(m), Some(task)) = (
            model,
            model.and_then(|m| r.model_tasks.get(m).copied().flatten()),
        ) {
            for metric in &e.metrics {
                if metric.value.task() != task {
                    diags.push(
                        Diagnostic::new(
                            Code::TargetKind,
                            metric.span,
                            format!("`{}` is a {} metric, but model `{}` does {}", metric.value.name(), metric.value.task().name(), p.models[m].name.value, task.name()),
                        )
                        .with_help(match task {
                            Problem::Classification => "for classification use accuracy, f1, classification_report, confusion_matrix or log_loss",
                            Problem::Regression => "for regression use rmse, mae or r2",
                        }),
                    );
                }
            }
        }
    }
    let mut written: BTreeMap<String, Span> = BTreeMap::new();
    // Paths read by sources, except those a source reads back after this pipeline
    // writes them (`after`).
    for s in &p.sources {
        r.source_after.push(None);
        let Some(after) = &s.after else { continue };
        let Some(o) = cx.step(after, StepKind::Output, &mut diags) else {
            continue;
        };
        let out = &p.outputs[o];
        if !matches!(out.kind, OutputKind::Dataset { .. }) {
            diags.push(
                Diagnostic::new(
                    Code::WrongStepKind,
                    after.span,
                    format!("output `{}` writes no dataset to read back", after.value),
                )
                .with_help("`after` names an output of kind \"dataset\""),
            );
        } else if s.path().map(|p| norm(p)) != Some(norm(&out.path)) {
            diags.push(
                Diagnostic::new(
                    Code::Conflict,
                    after.span,
                    format!(
                        "source `{}` reads back output `{}` but their paths differ",
                        s.name.value, after.value
                    ),
                )
                .with_help(format!("set the source's path to \"{}\"", out.path.value)),
            );
        } else {
            *r.source_after.last_mut().expect("pushed above") = Some(o);
        }
    }
    let inputs: BTreeSet<String> = p
        .sources
        .iter()
        .filter(|s| s.after.is_none())
        .filter_map(|s| s.path().map(|p| norm(p)))
        .collect();
    for o in &p.outputs {
        let (mut model, mut evals, mut data) = (None, Vec::new(), None);
        match &o.kind {
            OutputKind::Model { model: m } => model = cx.step(m, StepKind::Model, &mut diags),
            OutputKind::Metrics { evaluations } | OutputKind::Report { evaluations } => {
                evals = evaluations
                    .iter()
                    .filter_map(|e| cx.step(e, StepKind::Evaluation, &mut diags))
                    .collect();
                if evaluations.is_empty() {
                    evals = (0..p.evaluations.len()).collect();
                }
            }
            OutputKind::Predictions {
                model: m, data: d, ..
            } => {
                model = cx.step(m, StepKind::Model, &mut diags);
                data = cx.dataset(d, &mut diags, "an output");
            }
            OutputKind::Plan { .. } => {}
            OutputKind::Dataset { data: d, .. } => data = cx.dataset(d, &mut diags, "an output"),
        }
        r.output_models.push(model);
        r.output_evals.push(evals);
        r.output_data.push(data);
        let path = norm(&o.path);
        if inputs.contains(&path) {
            diags.push(
                Diagnostic::new(
                    Code::OverwritesInput,
                    o.path.span,
                    format!(
                        "output `{}` would overwrite the input `{}`",
                        o.name.value, o.path.value
                    ),
                )
                .with_help("write outputs to their own path, for example under out/"),
            );
        }
        if let Some(first) = written.get(&path) {
            diags.push(
                Diagnostic::new(
                    Code::DuplicateOutput,
                    o.path.span,
                    format!("`{}` is written by another output too", o.path.value),
                )
                .with_related(*first, "first written here")
                .with_help("give each output its own path"),
            );
        } else {
            written.insert(path, o.path.span);
        }
    }
    cycles(p, &r, &mut diags);
    unused(p, &r, &cx, &mut diags);
    (r, diags)
}

fn norm(path: &str) -> String {
    let mut s = path.trim().replace('\\', "/");
    while let Some(rest) = s.strip_prefix("./") {
        s = rest.to_string();
    }
    s.trim_end_matches('/').to_string()
}

fn first_part(k: &SplitKind) -> String {
    match k {
        SplitKind::Holdout { .. } | SplitKind::Predefined { .. } => "train".into(),
        SplitKind::KFold { .. } => "fold1".into(),
        SplitKind::Shards {
            by: ShardBy::Rows { names },
            ..
        } => names
            .first()
            .map(|n| format!("{}.train", n.value))
            .unwrap_or_else(|| "A.train".into()),
        SplitKind::Shards { .. } => "A.train".into(),
    }
}

struct Cx<'p, 'n> {
    p: &'p Pipeline,
    names: &'n Names<'p>,
    /// Names suggested for misspelt references ("did you mean `forest`?"): the
    /// step meant is used, once the typo is fixed, so it is not also called unused.
    meant: std::cell::RefCell<Vec<Name>>,
    /// A reference named no step and suggested none: what it meant is unknown.
    unresolved: std::cell::Cell<bool>,
}

impl Cx<'_, '_> {
    /// The help for an unknown name; remembers the suggestion.
    fn suggest_for(&self, r: &Name, word: &str, cands: &[&str], what: &str) -> String {
        if let Some(best) = crate::frontend::diag::did_you_mean(word, cands.iter().copied()) {
            let full = match r.value.split_once('.') {
                Some((head, _)) if word != r.value => format!("{head}.{best}"),
                _ => best.to_string(),
            };
            self.meant.borrow_mut().push(Name::new(full, r.span));
        } else {
            self.unresolved.set(true);
        }
        suggest(word, cands, what)
    }
}

impl Cx<'_, '_> {
    fn unknown(&self, r: &Name, want: &[StepKind], diags: &mut Vec<Diagnostic>) {
        if self.names.broken.contains(r.value.as_str()) {
            return; // the step itself is reported
        }
        let cands: Vec<&str> = self
            .names
            .map
            .iter()
            .filter(|(_, (k, _, _))| want.contains(k))
            .map(|(n, _)| *n)
            .collect();
        let what = want
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" or ");
        diags.push(
            Diagnostic::new(
                Code::UnknownReference,
                r.span,
                format!("no {what} is named `{}`", r.value),
            )
            .with_help(self.suggest_for(r, &r.value, &cands, &what)),
        );
    }

    fn step(&self, r: &Name, kind: StepKind, diags: &mut Vec<Diagnostic>) -> Option<usize> {
        match self.names.map.get(r.value.as_str()) {
            Some((k, i, _)) if *k == kind => Some(*i),
            Some((k, _, _)) => {
                // Named, if wrongly: that step is used once this is fixed.
                self.meant.borrow_mut().push(r.clone());
                let cands: Vec<&str> = self
                    .names
                    .map
                    .iter()
                    .filter(|(_, (k2, _, _))| *k2 == kind)
                    .map(|(n, _)| *n)
                    .collect();
                diags.push(
                    Diagnostic::new(
                        Code::WrongStepKind,
                        r.span,
                        format!("`{}` is a {}, not a {}", r.value, k.name(), kind.name()),
                    )
                    .with_help(suggest(&r.value, &cands, kind.name())),
                );
                None
            }
            None => {
                self.unknown(r, &[kind], diags);
                None
            }
        }
    }

    fn dataset(&self, r: &Name, diags: &mut Vec<Diagnostic>, user: &str) -> Option<Dataset> {
        match self.data_target(r, diags, user)? {
            DataTarget::Dataset(d) => Some(d),
            DataTarget::Split(i) => {
                diags.push(
                    Diagnostic::new(
                        Code::WrongStepKind,
                        r.span,
                        format!("`{}` is a split; {user} reads one of its parts", r.value),
                    )
                    .with_help(format!(
                        "name a part, like `{}.{}`",
                        r.value,
                        first_part(&self.p.splits[i].kind)
                    )),
                );
                None
            }
        }
    }

    fn data_target(&self, r: &Name, diags: &mut Vec<Diagnostic>, user: &str) -> Option<DataTarget> {
        let (head, rest) = match r.value.split_once('.') {
            Some((h, t)) => (h, Some(t)),
            None => (r.value.as_str(), None),
        };
        if self.names.map.contains_key(head) {
            // Named: used, even where it is the wrong kind of dataset here.
            self.meant
                .borrow_mut()
                .push(Name::new(head.to_string(), r.span));
        }
        let Some((kind, i, _)) = self.names.map.get(head) else {
            if self.names.broken.contains(head) {
                return None; // the step itself is reported
            }
            let data_kinds = [StepKind::Source, StepKind::Transform, StepKind::Split];
            let cands: Vec<String> = self
                .names
                .map
                .iter()
                .filter(|(_, (k, _, _))| data_kinds.contains(k))
                .flat_map(|(n, (k, i, _))| {
                    if *k == StepKind::Split {
                        parts_of(&self.p.splits[*i].kind)
                            .into_iter()
                            .map(|pt| format!("{n}.{pt}"))
                            .collect()
                    } else {
                        vec![n.to_string()]
                    }
                })
                .collect();
            let cands: Vec<&str> = cands.iter().map(String::as_str).collect();
            diags.push(
                Diagnostic::new(
                    Code::UnknownReference,
                    r.span,
                    format!("no dataset is named `{}`", r.value),
                )
                .with_help(self.suggest_for(r, &r.value, &cands, "dataset")),
            );
            return None;
        };
        match (kind, rest) {
            (StepKind::Source, None) => Some(DataTarget::Dataset(Dataset::Source(*i))),
            (StepKind::Transform, None) => Some(DataTarget::Dataset(Dataset::Transform(*i))),
            (StepKind::Split, None) => Some(DataTarget::Split(*i)),
            (StepKind::Split, Some(part)) => {
                let split = &self.p.splits[*i];
                match parse_part(&split.kind, part) {
                    Some(pt) => Some(DataTarget::Dataset(Dataset::Part {
                        split: *i,
                        part: pt,
                    })),
                    None if matches!(&split.kind, SplitKind::Shards { by: ShardBy::Column { names, .. }, .. } if names.is_empty()) =>
                    {
                        diags.push(
                            Diagnostic::new(
                                Code::UnknownReference,
                                r.span,
                                format!("split `{head}` has no part `{part}` it can name before reading the data: its shards are the values of a column"),
                            )
                            .with_help("list the values you refer to in the split's `names`, or use the whole split"),
                        );
                        None
                    }
                    None => {
                        let parts = parts_of(&split.kind);
                        let cands: Vec<&str> = parts.iter().map(String::as_str).collect();
                        diags.push(
                            Diagnostic::new(
                                Code::UnknownReference,
                                r.span,
                                format!("split `{head}` has no part `{part}`"),
                            )
                            .with_help(self.suggest_for(r, part, &cands, "part")),
                        );
                        None
                    }
                }
            }
            (k, Some(_)) => {
                diags.push(Diagnostic::new(
                    Code::UnknownReference,
                    r.span,
                    format!(
                        "`{head}` is a {}; only splits have parts (`name.part`)",
                        k.name()
                    ),
                ));
                None
            }
            (k, None) => {
                diags.push(Diagnostic::new(
                    Code::WrongStepKind,
                    r.span,
                    format!("`{head}` is a {}, not a dataset; {user} reads a source, a transform or a part of a split", k.name()),
                ));
                None
            }
        }
    }

    /// The task a model does: declared, or known from its target column's origin.
    fn model_task(&self, m: &ModelSpec, diags: &mut Vec<Diagnostic>) -> Option<Problem> {
        let known = target_kind(self.p, &m.input.value, &m.target.value, self.names);
        let task = m.task.as_ref().map(|t| t.value).or(known.map(|(t, _)| t));
        let Some(task) = task else {
            return default_task(m.estimator.value);
        };
        if let (Some(declared), Some((from_data, why))) = (&m.task, known)
            && declared.value != from_data
        {
            diags.push(
                Diagnostic::new(
                    Code::TargetKind,
                    declared.span,
                    format!(
                        "model `{}` is declared {} but its target `{}` is {why}",
                        m.name.value,
                        declared.value.name(),
                        m.target.value
                    ),
                )
                .with_help(format!("set task = \"{}\"", from_data.name())),
            );
            return Some(declared.value);
        }
        if !m.estimator.value.tasks().contains(&task) && m.task.is_none() {
            let why = known.map(|(_, w)| w).unwrap_or("of that kind");
            diags.push(
                Diagnostic::new(
                    Code::TargetKind,
                    m.estimator.span,
                    format!(
                        "{} cannot predict `{}`, which is {why} ({})",
                        m.estimator.value.name(),
                        m.target.value,
                        task.name()
                    ),
                )
                .with_help(match task {
                    Problem::Classification => {
                        "for classes use logistic_regression, decision_tree or random_forest"
                    }
                    Problem::Regression => {
                        "for numbers use linear_regression, ridge, decision_tree or random_forest"
                    }
                }),
            );
        }
        Some(task)
    }
}

fn default_task(e: EstimatorKind) -> Option<Problem> {
    match e.tasks() {
        [only] => Some(*only),
        _ => None,
    }
}

/// What the target column is, where its origin tells: MNIST labels are classes,
/// generated targets follow their generator, declared CSV types tell.
fn target_kind(
    p: &Pipeline,
    input: &str,
    target: &str,
    names: &Names,
) -> Option<(Problem, &'static str)> {
    let mut name = input.split('.').next()?;
    // Follow transforms and splits back to a source (bounded: cycles are reported elsewhere).
    for _ in 0..64 {
        let (kind, i, _) = names.map.get(name)?;
        match kind {
            StepKind::Source => {
                return match &p.sources[*i].kind {
                    SourceKind::Mnist { .. } if target == "label" => {
                        Some((Problem::Classification, "a class label"))
                    }
                    SourceKind::Synthetic(s) if s.target == target => match s.generator {
                        Generator::Classification | Generator::Blobs => {
                            Some((Problem::Classification, "a class label"))
                        }
                        Generator::Regression => Some((Problem::Regression, "a number")),
                        Generator::Gaussian => None,
                    },
                    SourceKind::Csv(c) => c
                        .columns
                        .iter()
                        .find(|(n, _)| n.value == target)
                        .and_then(|(_, t)| match t.value {
                            ColumnType::Float => Some((Problem::Regression, "a float column")),
                            ColumnType::String => Some((Problem::Classification, "a text column")),
                            ColumnType::Bool => Some((Problem::Classification, "a boolean column")),
                            ColumnType::Int => None,
                        }),
                    _ => None,
                };
            }
            StepKind::Transform => {
                let t = &p.transforms[*i];
                // A derived or cast target has a type the source cannot tell.
                let touched = t.steps.iter().any(|s| match &s.value {
                    Op::Derive { column, .. } | Op::Cast { column, .. } => column.value == target,
                    _ => false,
                });
                if touched {
                    return None;
                }
                name = t.input.value.split('.').next()?;
            }
            StepKind::Split => {
                name = match &p.splits[*i].kind {
                    SplitKind::Holdout { input, .. }
                    | SplitKind::KFold { input, .. }
                    | SplitKind::Shards { input, .. } => input.value.split('.').next()?,
                    SplitKind::Predefined {
                        from: PredefinedFrom::Source(s),
                    } => s.value.split('.').next()?,
                    SplitKind::Predefined {
                        from: PredefinedFrom::Pair { train, .. },
                    } => train.value.split('.').next()?,
                };
            }
            _ => return None,
        }
    }
    None
}

/// The parts a split offers, for references and suggestions.
pub fn parts_of(k: &SplitKind) -> Vec<String> {
    match k {
        SplitKind::Holdout { .. } | SplitKind::Predefined { .. } => {
            vec!["train".into(), "test".into()]
        }
        SplitKind::KFold { k, .. } => (1..=k.value.min(1000))
            .map(|i| format!("fold{i}"))
            .collect(),
        SplitKind::Shards {
            by:
                ShardBy::Rows { names }
                | ShardBy::Column { names, .. }
                | ShardBy::File { names }
                | ShardBy::Worker { names },
            ..
        } => names
            .iter()
            .flat_map(|n| {
                [
                    n.value.clone(),
                    format!("{}.train", n.value),
                    format!("{}.validation", n.value),
                ]
            })
            .collect(),
    }
}

fn parse_part(k: &SplitKind, part: &str) -> Option<Part> {
    match k {
        SplitKind::Holdout { .. } | SplitKind::Predefined { .. } => match part {
            "train" => Some(Part::Train),
            "test" => Some(Part::Test),
            _ => None,
        },
        SplitKind::KFold { k, .. } => {
            let i: u32 = part.strip_prefix("fold")?.parse().ok()?;
            (1..=k.value).contains(&i).then_some(Part::Fold(i))
        }
        SplitKind::Shards { by, .. } => {
            let (shard, sub) = match part.rsplit_once('.') {
                Some((s, "train")) => (s, Some(true)),
                Some((s, "validation")) => (s, Some(false)),
                Some(_) => return None,
                None => (part, None),
            };
            let known = match by {
                ShardBy::Rows { names } => names.iter().any(|n| n.value == shard),
                // Values are only known from the data: a part is named only when listed.
                // File stems are listed before planning (`compile::shard_files`).
                ShardBy::Column { names, .. } | ShardBy::Worker { names } => {
                    names.iter().any(|n| n.value == shard)
                }
                ShardBy::File { names } => {
                    names.is_empty() || names.iter().any(|n| n.value == shard)
                }
            };
            if !known || shard.is_empty() {
                return None;
            }
            Some(match sub {
                None => Part::Shard(shard.into()),
                Some(true) => Part::ShardTrain(shard.into()),
                Some(false) => Part::ShardValidation(shard.into()),
            })
        }
    }
}

/// Transforms that read each other in a loop.
fn cycles(p: &Pipeline, r: &Resolved, diags: &mut Vec<Diagnostic>) {
    // Each transform has one input; follow the chain from every transform.
    let n = p.transforms.len();
    let next = |i: usize| -> Option<usize> {
        match r.transform_inputs.get(i)?.as_ref()? {
            Dataset::Transform(j) => Some(*j),
            Dataset::Part { split, .. } => match r.split_inputs.get(*split)?.first()? {
                Dataset::Transform(j) => Some(*j),
                _ => None,
            },
            Dataset::Source(_) => None,
        }
    };
    // Each transform has at most one successor, so every walk is a path that ends
    // or runs into a cycle. Colouring visits each transform once: linear in the
    // number of transforms (a walk from every transform was quadratic, and with
    // the `seen` search cubic: minutes for a 2,000-transform chain).
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; n];
    let mut found: Vec<usize> = Vec::new();
    for first in 0..n {
        let mut path = Vec::new();
        let mut cur = Some(first);
        while let Some(i) = cur {
            match state[i] {
                NEW => {
                    state[i] = ON_PATH;
                    path.push(i);
                    cur = next(i);
                }
                ON_PATH => {
                    // The path came back to itself: `i` is on a cycle.
                    found.push(i);
                    break;
                }
                _ => break,
            }
        }
        for i in path {
            state[i] = DONE;
        }
    }
    for on_cycle in found {
        // Start at the cycle's first transform in the file, as the message reads best.
        let mut members = vec![on_cycle];
        let mut cur = next(on_cycle);
        while let Some(j) = cur {
            if j == on_cycle || members.len() > n {
                break;
            }
            members.push(j);
            cur = next(j);
        }
        let Some(&start) = members.iter().min() else {
            continue;
        };
        let at = members.iter().position(|m| *m == start).unwrap_or(0);
        members.rotate_left(at);
        let path: Vec<&str> = members
            .iter()
            .chain([&start])
            .map(|i| p.transforms[*i].name.value.as_str())
            .collect();
        diags.push(
            Diagnostic::new(
                Code::Cycle,
                p.transforms[start].input.span,
                format!(
                    "transforms read each other in a cycle: {}",
                    path.join(" → ")
                ),
            )
            .with_help("a pipeline is a DAG: make one of them read a source or another step"),
        );
    }
}

/// Warn about sources, transforms, splits and models that nothing uses.
fn unused(p: &Pipeline, r: &Resolved, cx: &Cx, diags: &mut Vec<Diagnostic>) {
    // A broken step that refers to something unreadable (`input = {}`) could use
    // any step: nothing can be called unused until it is fixed.
    // So could a reference to no step with no likely meaning (`input = "x"`).
    let unreadable = crate::frontend::lower::UNKNOWN_REF;
    if cx.unresolved.get()
        || p.broken
            .iter()
            .flat_map(|b| &b.refs)
            .any(|n| n.value == unreadable)
    {
        return;
    }
    let mut used_src = vec![false; p.sources.len()];
    let mut used_tr = vec![false; p.transforms.len()];
    let mut used_split = vec![false; p.splits.len()];
    let mut used_model = vec![false; p.models.len()];
    let mut stack: Vec<Dataset> = Vec::new();
    let mark_split = |i: usize, stack: &mut Vec<Dataset>, used_split: &mut Vec<bool>| {
        if !used_split[i] {
            used_split[i] = true;
            stack.extend(r.split_inputs[i].iter().cloned());
        }
    };
    for (i, m) in r.eval_models.iter().enumerate() {
        if let Some(m) = m {
            used_model[*m] = true;
        }
        for t in &r.eval_data[i] {
            match t {
                DataTarget::Dataset(d) => stack.push(d.clone()),
                DataTarget::Split(s) => mark_split(*s, &mut stack, &mut used_split),
            }
        }
    }
    for i in 0..p.outputs.len() {
        if let Some(m) = r.output_models[i] {
            used_model[m] = true;
        }
        for e in &r.output_evals[i] {
            if let Some(Some(m)) = r.eval_models.get(*e) {
                used_model[*m] = true;
            }
        }
        if let Some(d) = &r.output_data[i] {
            stack.push(d.clone());
        }
    }
    // What a step that could not be lowered reads is used (by that step, once
    // fixed), and so is the step a misspelt reference meant.
    let meant = cx.meant.borrow().clone();
    for b in p.broken.iter().map(|b| &b.refs).chain([&meant]) {
        for name in b {
            let head = name.value.split('.').next().unwrap_or("");
            match cx.names.map.get(head) {
                Some((StepKind::Model, i, _)) => used_model[*i] = true,
                Some((StepKind::Evaluation, i, _)) => {
                    if let Some(Some(m)) = r.eval_models.get(*i) {
                        used_model[*m] = true;
                    }
                }
                Some((StepKind::Source | StepKind::Transform | StepKind::Split, _, _)) => {
                    // Resolved only to mark: problems with it belong to the broken step.
                    match cx.data_target(name, &mut Vec::new(), "a step") {
                        Some(DataTarget::Dataset(d)) => stack.push(d),
                        Some(DataTarget::Split(s)) => mark_split(s, &mut stack, &mut used_split),
                        None => {}
                    }
                }
                _ => {}
            }
        }
    }
    for (i, used) in used_model.iter().enumerate() {
        if *used {
            match &r.model_inputs[i] {
                Some(DataTarget::Dataset(d)) => stack.push(d.clone()),
                Some(DataTarget::Split(s)) => mark_split(*s, &mut stack, &mut used_split),
                None => {}
            }
        }
    }
    let mut guard = 0;
    while let Some(d) = stack.pop() {
        guard += 1;
        if guard > 100_000 {
            break;
        }
        match d {
            Dataset::Source(i) => used_src[i] = true,
            Dataset::Transform(i) => {
                if !used_tr[i] {
                    used_tr[i] = true;
                    if let Some(x) = &r.transform_inputs[i] {
                        stack.push(x.clone());
                    }
                }
            }
            Dataset::Part { split, .. } => mark_split(split, &mut stack, &mut used_split),
        }
    }
    let warn = |diags: &mut Vec<Diagnostic>, kind: &str, n: &Name| {
        if cx.names.duplicates.contains(n.value.as_str()) {
            return; // which step a reference means is unclear until it is renamed
        }
        diags.push(
            Diagnostic::new(
                Code::UnusedStep,
                n.span,
                format!("{kind} `{}` is never used", n.value),
            )
            .with_help("it reaches no evaluation or output and will not run; remove it or use it"),
        );
    };
    for (i, s) in p.sources.iter().enumerate().filter(|(i, _)| !used_src[*i]) {
        let _ = i;
        warn(diags, "source", &s.name);
    }
    for (_, s) in p
        .transforms
        .iter()
        .enumerate()
        .filter(|(i, _)| !used_tr[*i])
    {
        warn(diags, "transform", &s.name);
    }
    for (_, s) in p.splits.iter().enumerate().filter(|(i, _)| !used_split[*i]) {
        warn(diags, "split", &s.name);
    }
    for (_, s) in p.models.iter().enumerate().filter(|(i, _)| !used_model[*i]) {
        warn(diags, "model", &s.name);
    }
}

#[cfg(test)]
mod tests {
    use crate::frontend::{self, Code};

    fn codes(text: &str) -> Vec<Code> {
        let mut parsed = frontend::parse_str("p.toml", text);
        crate::compile::check(&mut parsed);
        parsed.diagnostics.iter().map(|d| d.code).collect()
    }

    #[test]
    fn cycles_are_found_once_each_and_fast() {
        // Two cycles (a → b → a, and c → d → e → c) and a chain leading into one.
        let mut text = String::from(
            "[sources.s]\nkind = \"synthetic\"\ngenerator = \"gaussian\"\nrows = 10\n",
        );
        for (name, input) in [
            ("x", "a"),
            ("b", "a"),
            ("a", "b"),
            ("d", "e"),
            ("c", "d"),
            ("e", "c"),
        ] {
            text.push_str(&format!(
                "[transforms.{name}]\ninput = \"{input}\"\nsteps = []\n"
            ));
        }
        let mut parsed = frontend::parse_str("p.toml", &text);
        crate::compile::check(&mut parsed);
        let cycles: Vec<&str> = parsed
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::Cycle)
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            cycles,
            vec![
                "transforms read each other in a cycle: b → a → b",
                "transforms read each other in a cycle: d → e → c → d",
            ]
        );
        // A 5,000-transform cycle is checked in well under a second.
        let mut text = String::from(
            "[sources.s]\nkind = \"synthetic\"\ngenerator = \"gaussian\"\nrows = 10\n",
        );
        for i in 0..5000 {
            text.push_str(&format!(
                "[transforms.t{i}]\ninput = \"t{}\"\nsteps = []\n",
                (i + 1) % 5000
            ));
        }
        let started = std::time::Instant::now();
        let mut parsed = frontend::parse_str("p.toml", &text);
        crate::compile::check(&mut parsed);
        assert_eq!(
            parsed
                .diagnostics
                .iter()
                .filter(|d| d.code == Code::Cycle)
                .count(),
            1
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_step_that_failed_to_lower_is_reported_once() {
        // The misspelt estimator is the only problem: the evaluation's reference to
        // the model and the source it reads are not reported as well.
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[models.f]\nestimator = \"random_forrest\"\ninput = \"d\"\ntarget = \"label\"\n[evaluations.e]\nmodel = \"f\"\ndata = \"d\"\nmetrics = [\"accuracy\"]\n",
        );
        assert_eq!(c, vec![Code::UnknownEstimator]);
    }

    #[test]
    fn what_a_broken_step_reads_is_not_unused() {
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[models.f]\nestimator = \"random_forest\"\ninput = \"d\"\ntarget = \"label\"\n[evaluations.e]\nmodel = \"f\"\ndata = \"d\"\nmetrics = []\n",
        );
        assert_eq!(c, vec![Code::OutOfRange]);
    }

    #[test]
    fn the_step_a_typo_meant_is_not_also_unused() {
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[splits.s]\nkind = \"predefined\"\ninput = \"d\"\n[models.forest]\nestimator = \"random_forest\"\ninput = \"s.trian\"\ntarget = \"label\"\n[outputs.m]\nkind = \"model\"\nmodel = \"forset\"\npath = \"out/f.model\"\n",
        );
        assert_eq!(c, vec![Code::UnknownReference, Code::UnknownReference]);
    }

    #[test]
    fn nothing_is_unused_while_a_reference_is_unreadable() {
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[transforms.t]\ninput = {}\nsteps = []\n[outputs.o]\nkind = \"dataset\"\ndata = \"t\"\npath = \"out/t\"\n",
        );
        assert_eq!(c, vec![Code::WrongType]);
    }

    #[test]
    fn nothing_is_unused_while_a_reference_means_nothing_known() {
        // `x` suggests nothing: whether `d` was meant is unknown, so it is not
        // called unused.
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[transforms.t]\ninput = \"x\"\nsteps = []\n[outputs.o]\nkind = \"dataset\"\ndata = \"t\"\npath = \"out/t\"\n",
        );
        assert_eq!(c, vec![Code::UnknownReference]);
    }

    #[test]
    fn a_step_named_in_the_wrong_place_is_not_also_unused() {
        // The model names the whole split (E0307); the split and its source are
        // still what it reads.
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[splits.s]\nkind = \"predefined\"\ninput = \"d\"\n[models.f]\nestimator = \"random_forest\"\ninput = \"s\"\ntarget = \"label\"\n[outputs.m]\nkind = \"model\"\nmodel = \"f\"\npath = \"out/f.model\"\n",
        );
        assert_eq!(c, vec![Code::WrongStepKind]);
    }

    #[test]
    fn a_broken_model_may_be_evaluated_on_a_whole_shards_split() {
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[splits.s]\nkind = \"shards\"\ninput = \"d\"\nnames = [\"A\", \"B\"]\n[models.f]\nestimator = \"random_forrest\"\nper_shard = true\ninput = \"s\"\ntarget = \"label\"\n[evaluations.e]\nmodel = \"f\"\ndata = \"s\"\nmetrics = [\"accuracy\"]\n",
        );
        assert_eq!(c, vec![Code::UnknownEstimator]);
    }

    #[test]
    fn a_duplicate_step_is_not_also_unused() {
        let c = codes(
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[transforms.d]\ninput = \"d\"\nsteps = []\n[models.f]\nestimator = \"random_forest\"\ninput = \"d\"\ntarget = \"label\"\n[outputs.m]\nkind = \"model\"\nmodel = \"f\"\npath = \"out/f.model\"\n",
        );
        assert_eq!(c, vec![Code::DuplicateName]);
    }

    #[test]
    fn a_wrong_kind_of_step_names_the_right_ones() {
        let mut parsed = frontend::parse_str(
            "p.toml",
            "[sources.d]\nkind = \"mnist\"\npath = \"data/mnist\"\n[models.forest]\nestimator = \"random_forest\"\ninput = \"d\"\ntarget = \"label\"\n[evaluations.e]\nmodel = \"d\"\ndata = \"d\"\nmetrics = [\"accuracy\"]\n[outputs.m]\nkind = \"model\"\nmodel = \"forest\"\npath = \"out/f.model\"\n",
        );
        crate::compile::check(&mut parsed);
        let d = &parsed.diagnostics[0];
        assert_eq!(d.code, Code::WrongStepKind);
        assert_eq!(d.help.as_deref(), Some("expected one of `forest`"));
    }
}
