//! Priority classes: a small dense index (0 = most urgent) and the set of configured classes
//! that maps API metadata (a class name, or vLLM's integer `priority`) onto it.

use std::fmt;

/// The most classes a scheduler can have.
pub const MAX_CLASSES: usize = 8;

/// Most wait-queue tiers: every class, and in deadline order each class's relegated
/// requests (see `queue::Tiers`).
pub(crate) const MAX_TIERS: usize = 2 * MAX_CLASSES;

/// A priority class, by index: 0 is the most urgent. Obtain one from [`ClassSet`] (which
/// checks it exists) or, for the default three classes, from [`Class::HIGH`],
/// [`Class::MEDIUM`] and [`Class::LOW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class(u8);

impl Class {
    /// The most urgent class (index 0).
    pub const HIGH: Class = Class(0);
    /// The middle default class (index 1).
    pub const MEDIUM: Class = Class(1);
    /// The least urgent default class (index 2).
    pub const LOW: Class = Class(2);

    /// The class with this index. Whether it exists in a scheduler is checked at submit.
    pub const fn from_index(index: u8) -> Class {
        Class(index)
    }

    /// The class index (0 = most urgent).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "class#{}", self.0)
    }
}

/// The configured classes: names (for metadata and metrics) and the vLLM `priority` range
/// each one covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSet {
    names: Vec<String>,
    /// Inclusive `(low, high)` vLLM priority ranges, one per class; disjoint.
    priority_ranges: Vec<(i64, i64)>,
}

impl ClassSet {
    /// Builds the set. Callers (the config validator) guarantee 1..=MAX_CLASSES names,
    /// unique case-insensitively, and disjoint ranges.
    pub(crate) fn new(names: Vec<String>, priority_ranges: Vec<(i64, i64)>) -> Self {
        debug_assert_eq!(names.len(), priority_ranges.len());
        Self {
            names,
            priority_ranges,
        }
    }

    /// How many classes there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a scheduler has at least one class.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names, by class index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every class, most urgent first.
    pub fn iter(&self) -> impl Iterator<Item = Class> + '_ {
        (0..self.names.len()).map(|i| Class(i as u8))
    }

    /// The class's configured name.
    pub fn name(&self, class: Class) -> &str {
        self.names
            .get(class.index())
            .map(String::as_str)
            .unwrap_or("<unknown>")
    }

    /// Whether this class exists here.
    pub fn contains(&self, class: Class) -> bool {
        class.index() < self.names.len()
    }

    /// Checks that `class` exists here.
    pub fn check(&self, class: Class) -> Result<Class, ClassError> {
        if self.contains(class) {
            Ok(class)
        } else {
            Err(ClassError::UnknownIndex {
                index: class.0,
                classes: self.names.len(),
            })
        }
    }

    /// The class named `name`, compared case-insensitively (surrounding spaces ignored).
    ///
    /// ```
    /// let cfg = triage::SchedulerConfig::default();
    /// let classes = cfg.class_set();
    /// assert_eq!(classes.parse_name(" high ").unwrap(), triage::Class::HIGH);
    /// assert!(classes.parse_name("urgent").is_err());
    /// ```
    ///
    /// ```
    /// use triage::{Class, SchedulerConfig};
    /// let classes = SchedulerConfig::default().class_set();
    /// assert_eq!(classes.parse_name("high"), Ok(Class::HIGH)); // case does not matter
    /// let err = classes.parse_name("urgent").unwrap_err();
    /// assert!(err.to_string().contains("known classes: HIGH, MEDIUM, LOW"), "{err}");
    /// ```
    pub fn parse_name(&self, name: &str) -> Result<Class, ClassError> {
        let wanted = name.trim();
        self.names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(wanted))
            .map(|i| Class(i as u8))
            .ok_or_else(|| ClassError::UnknownName {
                name: name.to_string(),
                known: self.names.clone(),
            })
    }

    /// The class whose configured range holds vLLM's integer `priority` (lower is more
    /// urgent, as in vLLM).
    ///
    /// ```
    /// let classes = triage::SchedulerConfig::default().class_set();
    /// assert_eq!(classes.from_vllm_priority(0).unwrap(), triage::Class::HIGH);
    /// assert_eq!(classes.from_vllm_priority(5).unwrap(), triage::Class::MEDIUM);
    /// assert!(classes.from_vllm_priority(-1).is_err());
    /// ```
    ///
    /// ```
    /// use triage::{Class, SchedulerConfig};
    /// let classes = SchedulerConfig::default().class_set();
    /// // vLLM: lower is more urgent. The default ranges put 0 in HIGH.
    /// assert_eq!(classes.from_vllm_priority(0), Ok(Class::HIGH));
    /// assert!(classes.from_vllm_priority(i64::MAX).is_err());
    /// assert_eq!(classes.from_vllm_priority_nearest(i64::MAX), Class::LOW);
    /// ```
    pub fn from_vllm_priority(&self, priority: i64) -> Result<Class, ClassError> {
        self.priority_ranges
            .iter()
            .position(|&(lo, hi)| lo <= priority && priority <= hi)
            .map(|i| Class(i as u8))
            .ok_or_else(|| ClassError::PriorityOutOfRange {
                priority,
                ranges: self
                    .names
                    .iter()
                    .cloned()
                    .zip(self.priority_ranges.iter().copied())
                    .collect(),
            })
    }

    /// The class of vLLM's integer `priority`, or for a priority in no class's range the
    /// class whose range is nearest (ties: the more urgent class). For engines that clamp
    /// out-of-range priorities instead of refusing them; allocates nothing.
    ///
    /// ```
    /// let classes = triage::SchedulerConfig::default().class_set();
    /// assert_eq!(classes.from_vllm_priority_nearest(-1), triage::Class::HIGH);
    /// assert_eq!(classes.from_vllm_priority_nearest(5), triage::Class::MEDIUM);
    /// ```
    pub fn from_vllm_priority_nearest(&self, priority: i64) -> Class {
        let dist = |&(lo, hi): &(i64, i64)| {
            if priority < lo {
                lo.abs_diff(priority)
            } else if priority > hi {
                priority.abs_diff(hi)
            } else {
                0
            }
        };
        let best = (0..self.priority_ranges.len())
            .min_by_key(|&i| (dist(&self.priority_ranges[i]), i))
            .unwrap_or(0);
        Class(best as u8)
    }
}

/// A class name, index or vLLM priority that maps to no configured class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassError {
    /// No class has this name.
    UnknownName {
        /// The name given.
        name: String,
        /// The configured names.
        known: Vec<String>,
    },
    /// The class index is past the configured classes.
    UnknownIndex {
        /// The index given.
        index: u8,
        /// How many classes there are.
        classes: usize,
    },
    /// No class's range holds this vLLM priority.
    PriorityOutOfRange {
        /// The priority given.
        priority: i64,
        /// Each class with its inclusive priority range.
        ranges: Vec<(String, (i64, i64))>,
    },
}

impl std::fmt::Display for ClassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassError::UnknownName { name, known } => {
                write!(
                    f,
                    "unknown class {name:?}; known classes: {}",
                    known.join(", ")
                )
            }
            ClassError::UnknownIndex { index, classes } => write!(
                f,
                "unknown class index {index}; configured classes are 0..{classes}"
            ),
            ClassError::PriorityOutOfRange { priority, ranges } => {
                write!(f, "priority {priority} is in no class's range; ranges:")?;
                for (name, (lo, hi)) in ranges {
                    write!(f, " {name}=[{lo}, {hi}]")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ClassError {}

/// How a class's aging threshold breaks the ladder's rules: the top class has none; a
/// threshold is more than zero; and a more urgent class holds a promoted request longer
/// than the class it came from (thresholds grow with urgency), or the request would skip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LadderBreak {
    /// Class 0 has a threshold: the top class has nowhere to go.
    TopClassPromotes,
    /// The threshold is zero.
    Zero,
    /// Class `above`, more urgent, has threshold `at`, not more than this one.
    NotGrowing {
        /// The more urgent class.
        above: usize,
        /// Its threshold.
        at: u64,
    },
}

/// Whether class `i`'s threshold in `thresholds` (one per class, most urgent first, in any
/// unit; `None`: never promoted) keeps the aging ladder's rules; the first more urgent
/// class that breaks it is named. The one rule for the scheduler's configuration and the
/// standalone [`crate::WaitingQueue`]'s options.
pub(crate) fn ladder_break(thresholds: &[Option<u64>], i: usize) -> Option<LadderBreak> {
    let t = thresholds[i]?;
    if i == 0 {
        return Some(LadderBreak::TopClassPromotes);
    }
    if t == 0 {
        return Some(LadderBreak::Zero);
    }
    thresholds[1..i]
        .iter()
        .enumerate()
        .filter_map(|(j, a)| a.map(|a| (j + 1, a)))
        .find(|&(_, a)| a <= t)
        .map(|(above, at)| LadderBreak::NotGrowing { above, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_class_of_a_vllm_priority() {
        let set = ClassSet::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec![(0, 0), (3, 5), (10, i64::MAX)],
        );
        let nearest = |p| set.from_vllm_priority_nearest(p).index();
        // In range: exactly from_vllm_priority.
        for p in [0, 3, 4, 5, 10, i64::MAX] {
            assert_eq!(nearest(p), set.from_vllm_priority(p).unwrap().index());
        }
        assert_eq!(nearest(i64::MIN), 0);
        assert_eq!(nearest(1), 0);
        assert_eq!(nearest(2), 1);
        assert_eq!(nearest(7), 1, "2 from b, 3 from c");
        assert_eq!(nearest(8), 2, "3 from b, 2 from c");
        let tie = ClassSet::new(vec!["a".into(), "b".into()], vec![(0, 0), (2, 2)]);
        assert_eq!(tie.from_vllm_priority_nearest(1).index(), 0, "ties go up");
    }
}
