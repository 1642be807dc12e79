//! Typed identities of tasks and partitions.
//!
//! In: the parts the planner knows when it cuts a node into tasks (node id,
//! partition index, tree group, shard, fold left out, split part). Out:
//! [`TaskId`], [`PartitionId`] (and [`TaskPart`], [`DatasetId`]), whose fields
//! the kernels read, and whose `Display` is the one text form of an id: the plan
//! text, the DOT pictures, progress lines, the cluster's event lines and its wire
//! keys (`PartitionInfo.partition`, Flight keys `<run>/<partition>`).
//! Must not: parse that text back. There is no `FromStr` on purpose: a key that
//! crosses the wire is opaque, and whoever needs the typed id maps the key to it
//! from the plan. Ordering agrees with the text (so plans sort as they always
//! have, `p10` before `p2`), with the structure breaking ties.

use crate::data::split::Part;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Which of a logical node's tasks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskPart {
    /// The task over input partition `n`: `p{n}`.
    Partition(u32),
    /// Tree group `n` of a forest: `g{n}`.
    Group(u32),
    /// The fit of one shard: `shard-{name}`.
    Shard(String),
    /// The fit on every fold of a k-fold split but one, for cross-validation:
    /// `without-{split}.fold{fold}`.
    WithoutFold { split: String, fold: u32 },
    /// An evaluation's scoring of partition `index` of dataset `data`, tallied
    /// where the partition is: `score-{data}.p{index}`.
    Score { data: String, index: u32 },
    /// The node's one task, or the one gathering its parts: `out`.
    Out,
}

/// A task: `<logical node id>/<part>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The logical node (`fit:forest`).
    pub node: String,
    pub part: TaskPart,
}

/// A dataset: a source or transform (`mnist`), or one part of a split
/// (`mnist.train`, `cv.fold2`, `regions.north.validation`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatasetId {
    /// A source or a transform, by name.
    Whole(String),
    /// A part of the split named `split`.
    Part { split: String, part: Part },
}

/// What a task reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartitionId {
    /// Partition `index` of a dataset: `<dataset>/p{index}`.
    Data { dataset: DatasetId, index: u32 },
    /// The one output of a task that is not data (a model, its part, metrics, a
    /// write receipt): shown as the task's id.
    Output(TaskId),
}

impl TaskId {
    pub fn new(node: impl Into<String>, part: TaskPart) -> Self {
        TaskId {
            node: node.into(),
            part,
        }
    }

    /// The partition a per-partition task (`…/pN`) reads or writes.
    pub fn partition(&self) -> Option<u32> {
        match self.part {
            TaskPart::Partition(p) => Some(p),
            _ => None,
        }
    }
}

impl DatasetId {
    /// The split this dataset is a part of, and the part.
    pub fn split_part(&self) -> Option<(&str, &Part)> {
        match self {
            DatasetId::Whole(_) => None,
            DatasetId::Part { split, part } => Some((split, part)),
        }
    }
}

impl PartitionId {
    /// Partition `index` of the whole dataset `name`.
    pub fn data(name: impl Into<String>, index: u32) -> Self {
        PartitionId::Data {
            dataset: DatasetId::Whole(name.into()),
            index,
        }
    }

    /// Partition `index` of part `part` of the split `split`.
    pub fn split_part(split: impl Into<String>, part: Part, index: u32) -> Self {
        PartitionId::Data {
            dataset: DatasetId::Part {
                split: split.into(),
                part,
            },
            index,
        }
    }

    /// The dataset this is a partition of; `None` for a task's output.
    pub fn dataset(&self) -> Option<&DatasetId> {
        match self {
            PartitionId::Data { dataset, .. } => Some(dataset),
            PartitionId::Output(_) => None,
        }
    }

    /// The task whose output this is; `None` for data.
    pub fn task(&self) -> Option<&TaskId> {
        match self {
            PartitionId::Output(t) => Some(t),
            PartitionId::Data { .. } => None,
        }
    }
}

impl From<TaskId> for PartitionId {
    fn from(t: TaskId) -> Self {
        PartitionId::Output(t)
    }
}

/// In the crate's own tests only: whether ids show with other separators and
/// suffixes (`DAGML_TEST_RENAME_IDS` set), to show that nothing parses their
/// text (see the kernels' tests). Always false outside tests.
#[cfg(test)]
pub(crate) fn renamed() -> bool {
    static RENAMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RENAMED.get_or_init(|| std::env::var_os("DAGML_TEST_RENAME_IDS").is_some())
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn renamed() -> bool {
    false
}

impl fmt::Display for TaskPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if renamed() {
            return match self {
                TaskPart::Partition(p) => write!(f, "part-{p}"),
                TaskPart::Group(g) => write!(f, "trees-{g}"),
                TaskPart::Shard(s) => write!(f, "member[{s}]"),
                TaskPart::WithoutFold { split, fold } => write!(f, "cv[{split}~{fold}]"),
                TaskPart::Score { data, index } => write!(f, "tally[{data}#{index}]"),
                TaskPart::Out => f.write_str("result"),
            };
        }
        match self {
            TaskPart::Partition(p) => write!(f, "p{p}"),
            TaskPart::Group(g) => write!(f, "g{g}"),
            TaskPart::Shard(s) => write!(f, "shard-{s}"),
            TaskPart::WithoutFold { split, fold } => write!(f, "without-{split}.fold{fold}"),
            TaskPart::Score { data, index } => write!(f, "score-{data}.p{index}"),
            TaskPart::Out => f.write_str("out"),
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if renamed() { "::" } else { "/" };
        write!(f, "{}{sep}{}", self.node, self.part)
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetId::Whole(name) => f.write_str(name),
            DatasetId::Part { split, part } => write!(f, "{split}.{}", part.label()),
        }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionId::Data { dataset, index } if renamed() => write!(f, "{dataset}#{index}"),
            PartitionId::Data { dataset, index } => write!(f, "{dataset}/p{index}"),
            PartitionId::Output(t) => t.fmt(f),
        }
    }
}

/// Order by the text form, as plans were always sorted; two different ids with
/// the same text (which the planner never makes) by their structure, so that
/// `Ord` stays consistent with `Eq`.
macro_rules! ordered_by_text {
    ($($t:ty),*) => {$(
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> Ordering {
                if self == other {
                    return Ordering::Equal;
                }
                self.to_string()
                    .cmp(&other.to_string())
                    .then_with(|| format!("{self:?}").cmp(&format!("{other:?}")))
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
    )*};
}

ordered_by_text!(TaskPart, TaskId, DatasetId, PartitionId);

#[cfg(test)]
mod tests {
    use super::*;

    fn task(node: &str, part: TaskPart) -> String {
        TaskId::new(node, part).to_string()
    }

    #[test]
    fn a_per_partition_task_shows_as_node_slash_p_index() {
        assert_eq!(
            task("source:mnist", TaskPart::Partition(0)),
            "source:mnist/p0"
        );
        assert_eq!(
            task("sink:written", TaskPart::Partition(17)),
            "sink:written/p17"
        );
        assert_eq!(
            TaskId::new("a", TaskPart::Partition(3)).partition(),
            Some(3)
        );
    }

    #[test]
    fn a_tree_group_shows_as_g_index() {
        assert_eq!(task("fit:forest", TaskPart::Group(3)), "fit:forest/g3");
        assert_eq!(
            TaskId::new("fit:forest", TaskPart::Group(3)).partition(),
            None
        );
    }

    #[test]
    fn a_shard_fit_shows_as_shard_dash_name() {
        assert_eq!(
            task("fit:m", TaskPart::Shard("north".into())),
            "fit:m/shard-north"
        );
        assert_eq!(task("fit:m", TaskPart::Shard("*".into())), "fit:m/shard-*");
    }

    #[test]
    fn a_cross_validation_fit_shows_the_fold_left_out() {
        let t = TaskPart::WithoutFold {
            split: "cv".into(),
            fold: 2,
        };
        assert_eq!(task("fit:m", t), "fit:m/without-cv.fold2");
    }

    #[test]
    fn the_single_task_shows_as_out() {
        assert_eq!(task("fit:forest", TaskPart::Out), "fit:forest/out");
        assert_eq!(task("evaluate:a", TaskPart::Out), "evaluate:a/out");
    }

    #[test]
    fn a_dataset_partition_shows_as_dataset_slash_p_index() {
        assert_eq!(PartitionId::data("mnist", 0).to_string(), "mnist/p0");
        assert_eq!(
            PartitionId::split_part("mnist", Part::Train, 0).to_string(),
            "mnist.train/p0"
        );
        assert_eq!(
            PartitionId::split_part("cv", Part::Fold(3), 1).to_string(),
            "cv.fold3/p1"
        );
        assert_eq!(
            PartitionId::split_part("regions", Part::Shard("north".into()), 0).to_string(),
            "regions.north/p0"
        );
        assert_eq!(
            PartitionId::split_part("regions", Part::ShardTrain("north".into()), 0).to_string(),
            "regions.north.train/p0"
        );
        assert_eq!(
            PartitionId::split_part("regions", Part::ShardValidation("n".into()), 2).to_string(),
            "regions.n.validation/p2"
        );
    }

    #[test]
    fn a_task_output_shows_as_its_task() {
        let t = TaskId::new("fit:forest", TaskPart::Group(4));
        assert_eq!(PartitionId::from(t).to_string(), "fit:forest/g4");
    }

    #[test]
    fn ids_sort_as_their_text_does() {
        let mut ids: Vec<TaskId> = [
            TaskPart::Partition(2),
            TaskPart::Partition(10),
            TaskPart::Out,
            TaskPart::Group(1),
            TaskPart::Shard("b".into()),
        ]
        .into_iter()
        .map(|p| TaskId::new("fit:x", p))
        .chain([
            TaskId::new("fit:x.y", TaskPart::Out),
            TaskId::new("evaluate:x", TaskPart::Out),
        ])
        .collect();
        let mut texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        ids.sort();
        texts.sort();
        assert_eq!(
            ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            texts
        );
        // Ties in text fall back to the structure, consistent with `Eq`.
        let a = PartitionId::data("x", 0);
        let b = PartitionId::from(TaskId::new("x", TaskPart::Partition(0)));
        assert_eq!(a.to_string(), b.to_string());
        assert_ne!(a.cmp(&b), Ordering::Equal);
        assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
    }

    #[test]
    fn ids_travel_as_json_unchanged() {
        let ids = vec![
            PartitionId::split_part("s", Part::ShardTrain("n".into()), 0),
            PartitionId::from(TaskId::new(
                "fit:m",
                TaskPart::WithoutFold {
                    split: "cv".into(),
                    fold: 1,
                },
            )),
        ];
        let json = serde_json::to_string(&ids).unwrap();
        let back: Vec<PartitionId> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ids);
    }
}
