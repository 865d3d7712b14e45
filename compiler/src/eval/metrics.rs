//! Classification metrics over model output rows, one row of logits per
//! sample.
//!
//! A sample counts as top-k correct when fewer than k logits rank above its
//! label's logit. Ties rank the lower class index first, so top-1 equals
//! `argmax == label` with NumPy's first-index rule. A row with a NaN or an
//! infinity counts as wrong, because no ranking is defined for it.
//!
//! Against a reference model run on the same inputs, the metrics are the
//! top-1 agreement, the KL divergence KL(softmax(reference) ||
//! softmax(model)) in nats, and the absolute error of the logits. Sums are
//! kept in f64.

use serde::Serialize;

/// Number of top classes that the top-5 accuracy looks at.
const TOP_K: usize = 5;

/// Returns the index of the largest value, the first one on ties.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (index, &value) in row.iter().enumerate() {
        if value > row[best] {
            best = index;
        }
    }
    best
}

/// Returns the position of `row[label]` when the row is sorted by
/// decreasing value, with ties ordered by index: 0 means the label is the
/// [`argmax`].
pub fn rank_of(row: &[f32], label: usize) -> usize {
    let target = row[label];
    row.iter()
        .enumerate()
        .filter(|&(index, &value)| value > target || (value == target && index < label))
        .count()
}

/// Computes log(softmax(row)) in f64, subtracting the maximum first so that
/// large logits do not overflow.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&v| v as f64 - max - log_sum).collect()
}

/// Computes KL(softmax(reference) || softmax(model)) in nats, clamped at 0
/// because rounding can make it a tiny negative number.
pub fn kl_divergence(reference: &[f32], model: &[f32]) -> f64 {
    assert_eq!(reference.len(), model.len(), "kl_divergence: rows differ in length");
    let log_p = log_softmax(reference);
    let log_q = log_softmax(model);
    let kl: f64 = log_p.iter().zip(&log_q).map(|(&lp, &lq)| lp.exp() * (lp - lq)).sum();
    kl.max(0.0)
}

fn is_finite_row(row: &[f32]) -> bool {
    row.iter().all(|v| v.is_finite())
}

/// Support and top-1 correct count of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    /// Samples whose label is this class.
    pub support: usize,
    /// Those of them whose top-1 prediction is this class.
    pub correct: usize,
}

impl ClassCounts {
    /// Returns `correct / support`, or `None` for a class without samples.
    pub fn accuracy(&self) -> Option<f64> {
        (self.support > 0).then(|| self.correct as f64 / self.support as f64)
    }
}

/// Comparison of a model's outputs with a reference model's outputs on the
/// same samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Samples whose top-1 class is the same for both models.
    pub top1_agreeing: usize,
    /// `top1_agreeing` divided by the sample count.
    pub top1_agreement: f64,
    /// Mean over samples of KL(softmax(reference) || softmax(model)), in nats.
    pub mean_kl_divergence: f64,
    /// Largest absolute difference between two logits.
    pub max_abs_error: f64,
    /// Mean absolute difference over all logits.
    pub mean_abs_error: f64,
    /// Samples left out of the KL divergence and the errors because a row of
    /// either model has a NaN or an infinity. They count as disagreeing.
    pub non_finite_rows: usize,
}

/// Metrics of a whole evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub samples: usize,
    pub classes: usize,
    pub top1_correct: usize,
    /// Samples whose label is among the 5 top classes. `None` for models
    /// with fewer than 10 classes, where top-5 is of little use.
    pub top5_correct: Option<usize>,
    /// Counts per class, indexed by class.
    pub per_class: Vec<ClassCounts>,
    /// Samples whose output row has a NaN or an infinity.
    pub non_finite_rows: usize,
    /// Present when a reference model ran on the same samples.
    pub comparison: Option<Comparison>,
}

impl Metrics {
    pub fn top1_accuracy(&self) -> f64 {
        ratio(self.top1_correct, self.samples)
    }

    pub fn top5_accuracy(&self) -> Option<f64> {
        self.top5_correct.map(|correct| ratio(correct, self.samples))
    }
}

fn ratio(count: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { count as f64 / total as f64 }
}

/// Running sums for the comparison with a reference model.
#[derive(Default)]
struct ComparisonSums {
    agreeing: usize,
    kl_sum: f64,
    abs_error_sum: f64,
    max_abs_error: f64,
    /// Rows that entered the KL divergence and the errors.
    compared_rows: usize,
    compared_values: usize,
    non_finite_rows: usize,
}

/// Collects the metrics sample by sample.
pub struct Accumulator {
    classes: usize,
    samples: usize,
    top1_correct: usize,
    top5_correct: usize,
    per_class: Vec<ClassCounts>,
    non_finite_rows: usize,
    comparison: Option<ComparisonSums>,
}

impl Accumulator {
    /// Starts an evaluation of a model with `classes` outputs per sample,
    /// compared with a reference model when `with_reference` is set.
    pub fn new(classes: usize, with_reference: bool) -> Accumulator {
        Accumulator {
            classes,
            samples: 0,
            top1_correct: 0,
            top5_correct: 0,
            per_class: vec![ClassCounts::default(); classes],
            non_finite_rows: 0,
            comparison: with_reference.then(ComparisonSums::default),
        }
    }

    /// Adds one sample: its output `row`, its `label` and, when the
    /// accumulator compares with a reference, the reference's output row.
    ///
    /// Panics if a row does not have one value per class, if the label is
    /// not a class index, or if `reference` is given exactly when the
    /// accumulator was created without a reference.
    pub fn add(&mut self, row: &[f32], label: usize, reference: Option<&[f32]>) {
        assert_eq!(row.len(), self.classes, "Accumulator::add: output row length is not the class count");
        assert!(label < self.classes, "Accumulator::add: label {label} is not a class index");
        self.samples += 1;
        self.per_class[label].support += 1;

        let finite = is_finite_row(row);
        if finite {
            let rank = rank_of(row, label);
            if rank == 0 {
                self.top1_correct += 1;
                self.per_class[label].correct += 1;
            }
            if rank < TOP_K {
                self.top5_correct += 1;
            }
        } else {
            self.non_finite_rows += 1;
        }

        match (&mut self.comparison, reference) {
            (Some(sums), Some(reference)) => {
                assert_eq!(reference.len(), self.classes, "Accumulator::add: reference row length is not the class count");
                if !finite || !is_finite_row(reference) {
                    sums.non_finite_rows += 1;
                    return;
                }
                if argmax(row) == argmax(reference) {
                    sums.agreeing += 1;
                }
                sums.kl_sum += kl_divergence(reference, row);
                for (&a, &b) in row.iter().zip(reference) {
                    let error = (a as f64 - b as f64).abs();
                    sums.abs_error_sum += error;
                    sums.max_abs_error = sums.max_abs_error.max(error);
                }
                sums.compared_rows += 1;
                sums.compared_values += row.len();
            }
            (None, None) => {}
            _ => panic!("Accumulator::add: pass a reference row exactly when the accumulator compares with a reference"),
        }
    }

    /// Adds `labels.len()` samples whose rows lie one after another in
    /// `rows` (and in `reference`, when given).
    pub fn add_batch(&mut self, rows: &[f32], labels: &[usize], reference: Option<&[f32]>) {
        assert_eq!(rows.len(), labels.len() * self.classes, "Accumulator::add_batch: rows do not match the labels");
        for (index, (row, &label)) in rows.chunks_exact(self.classes).zip(labels).enumerate() {
            let reference_row = reference.map(|r| &r[index * self.classes..(index + 1) * self.classes]);
            self.add(row, label, reference_row);
        }
    }

    pub fn finish(self) -> Metrics {
        let samples = self.samples;
        let comparison = self.comparison.map(|sums| Comparison {
            top1_agreeing: sums.agreeing,
            top1_agreement: ratio(sums.agreeing, samples),
            mean_kl_divergence: mean(sums.kl_sum, sums.compared_rows),
            max_abs_error: if sums.compared_rows > 0 { sums.max_abs_error } else { f64::NAN },
            mean_abs_error: mean(sums.abs_error_sum, sums.compared_values),
            non_finite_rows: sums.non_finite_rows,
        });
        Metrics {
            samples,
            classes: self.classes,
            top1_correct: self.top1_correct,
            top5_correct: (self.classes >= 10).then_some(self.top5_correct),
            per_class: self.per_class,
            non_finite_rows: self.non_finite_rows,
            comparison,
        }
    }
}

/// Returns `sum / count`, or NaN when nothing was counted.
fn mean(sum: f64, count: usize) -> f64 {
    if count == 0 { f64::NAN } else { sum / count as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn rank_counts_larger_and_earlier_ties() {
        let row = [0.5, 2.0, 1.0, 2.0, -1.0];
        assert_eq!(rank_of(&row, 1), 0);
        assert_eq!(rank_of(&row, 3), 1);
        assert_eq!(rank_of(&row, 2), 2);
        assert_eq!(rank_of(&row, 0), 3);
        assert_eq!(rank_of(&row, 4), 4);
    }

    #[test]
    fn log_softmax_of_equal_logits() {
        let values = log_softmax(&[1000.0, 1000.0]);
        assert!(close(values[0], -(2.0f64).ln()));
        assert!(close(values[1], -(2.0f64).ln()));
    }

    #[test]
    fn kl_divergence_hand_computed() {
        // p = softmax([0, 0]) = [1/2, 1/2] and q = softmax([ln 3, 0]) = [3/4, 1/4].
        // KL(p || q) = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3).
        let kl = kl_divergence(&[0.0, 0.0], &[3.0f32.ln(), 0.0]);
        assert!((kl - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-7, "{kl}");
        assert_eq!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
    }

    #[test]
    fn top1_and_top5_accuracy() {
        let mut accumulator = Accumulator::new(10, false);
        // The first sample's label ranks first. The second's has four larger
        // logits (rank 4, so top-5 but not top-1). The third's ranks last.
        let first: Vec<f32> = (0..10).map(|i| if i == 0 { 9.0 } else { 0.0 }).collect();
        let fifth: Vec<f32> = vec![5.0, 1.0, 0.0, 0.0, 0.0, 4.0, 3.0, 2.0, 0.0, 0.0];
        let last: Vec<f32> = (0..10).map(|i| if i == 2 { -1.0 } else { i as f32 }).collect();
        accumulator.add(&first, 0, None);
        accumulator.add(&fifth, 1, None);
        accumulator.add(&last, 2, None);
        let metrics = accumulator.finish();
        assert_eq!(metrics.samples, 3);
        assert_eq!(metrics.top1_correct, 1);
        assert_eq!(metrics.top5_correct, Some(2));
        assert!(close(metrics.top1_accuracy(), 1.0 / 3.0));
        assert!(close(metrics.top5_accuracy().unwrap(), 2.0 / 3.0));
    }

    #[test]
    fn top5_absent_below_ten_classes() {
        let mut accumulator = Accumulator::new(3, false);
        accumulator.add(&[1.0, 0.0, 0.0], 0, None);
        assert_eq!(accumulator.finish().top5_correct, None);
    }

    #[test]
    fn per_class_support_and_correct() {
        let mut accumulator = Accumulator::new(3, false);
        let rows = [
            1.0, 0.0, 0.0, // predicts 0, label 0
            1.0, 0.0, 0.0, // predicts 0, label 1
            0.0, 1.0, 0.0, // predicts 1, label 1
            0.0, 0.0, 1.0, // predicts 2, label 0
        ];
        accumulator.add_batch(&rows, &[0, 1, 1, 0], None);
        let metrics = accumulator.finish();
        assert_eq!(metrics.per_class[0], ClassCounts { support: 2, correct: 1 });
        assert_eq!(metrics.per_class[1], ClassCounts { support: 2, correct: 1 });
        assert_eq!(metrics.per_class[2], ClassCounts { support: 0, correct: 0 });
        assert_eq!(metrics.per_class[2].accuracy(), None);
        assert_eq!(metrics.per_class[0].accuracy(), Some(0.5));
    }

    #[test]
    fn non_finite_row_counts_as_wrong() {
        let mut accumulator = Accumulator::new(2, false);
        accumulator.add(&[f32::NAN, 0.0], 1, None);
        accumulator.add(&[f32::INFINITY, 0.0], 0, None);
        let metrics = accumulator.finish();
        assert_eq!(metrics.top1_correct, 0);
        assert_eq!(metrics.non_finite_rows, 2);
    }

    #[test]
    fn comparison_hand_computed() {
        let mut accumulator = Accumulator::new(2, true);
        // Sample 0: same top-1, errors 0.5 and 0.
        // Sample 1: top-1 differs, errors 2 and 1.
        let model = [1.0, 0.5, 2.0, 0.0];
        let reference = [1.0, 0.0, 0.0, 1.0];
        accumulator.add_batch(&model, &[0, 1], Some(&reference));
        let comparison = accumulator.finish().comparison.unwrap();
        assert_eq!(comparison.top1_agreeing, 1);
        assert!(close(comparison.top1_agreement, 0.5));
        assert!(close(comparison.max_abs_error, 2.0));
        assert!(close(comparison.mean_abs_error, 3.5 / 4.0));
        let expected_kl = (kl_divergence(&[1.0, 0.0], &[1.0, 0.5]) + kl_divergence(&[0.0, 1.0], &[2.0, 0.0])) / 2.0;
        assert!(close(comparison.mean_kl_divergence, expected_kl));
        assert_eq!(comparison.non_finite_rows, 0);
    }

    #[test]
    fn comparison_with_itself_is_exact() {
        let mut accumulator = Accumulator::new(3, true);
        let rows = [0.3, -2.0, 7.5, 1.0, 1.0, 0.0];
        accumulator.add_batch(&rows, &[2, 0], Some(&rows));
        let comparison = accumulator.finish().comparison.unwrap();
        assert_eq!(comparison.top1_agreement, 1.0);
        assert_eq!(comparison.mean_kl_divergence, 0.0);
        assert_eq!(comparison.max_abs_error, 0.0);
        assert_eq!(comparison.mean_abs_error, 0.0);
    }

    #[test]
    fn comparison_skips_non_finite_rows() {
        let mut accumulator = Accumulator::new(2, true);
        accumulator.add(&[1.0, 0.0], 0, Some(&[f32::NAN, 0.0]));
        accumulator.add(&[1.0, 0.0], 0, Some(&[1.0, 0.0]));
        let comparison = accumulator.finish().comparison.unwrap();
        assert_eq!(comparison.non_finite_rows, 1);
        assert_eq!(comparison.top1_agreeing, 1);
        assert!(close(comparison.top1_agreement, 0.5));
        assert_eq!(comparison.max_abs_error, 0.0);
    }
}
