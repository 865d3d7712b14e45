//! The result of `vitc eval`: a serializable report and its text form.

use std::fmt;

use serde::Serialize;

use super::metrics::{Comparison, Metrics};

/// Max classes listed one by one in the text report. For larger models it
/// lists only the classes with the lowest accuracy, but the JSON has all.
const MAX_CLASSES_LISTED: usize = 100;
/// Classes shown when a model has more than [`MAX_CLASSES_LISTED`].
const WORST_CLASSES_LISTED: usize = 20;

/// Accuracy of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassReport {
    pub class: usize,
    /// The class subfolder name, for a folder dataset.
    pub name: Option<String>,
    /// Samples labeled with this class.
    pub support: usize,
    /// Those of them whose top-1 prediction is this class.
    pub correct: usize,
    /// `correct / support`, or `None` when the class has no samples.
    pub accuracy: Option<f64>,
}

/// Time spent per phase. Throughput counts only the time spent in model
/// runs, including the padding of the last batch. The total also covers
/// loading and preprocessing data and running the reference model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// Importing, canonicalizing and compiling the model (and the reference).
    pub prepare_seconds: f64,
    /// Running the evaluated model on all batches.
    pub model_seconds: f64,
    /// Wall time of the evaluation loop.
    pub total_seconds: f64,
    /// Samples divided by `model_seconds`.
    pub samples_per_second: f64,
}

/// Everything `vitc eval` measured, as printed and as written by `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub model: String,
    pub reference: Option<String>,
    /// Engine that ran the reference model.
    pub reference_engine: Option<String>,
    pub data: String,
    pub engine: String,
    /// Samples per model run.
    pub batch: usize,
    /// Threads of the JIT's pool, or `None` for the interpreter, whose
    /// matrix products use matrixmultiply's own threads.
    pub threads: Option<usize>,
    pub samples: usize,
    pub classes: usize,
    pub top1_accuracy: f64,
    pub top1_correct: usize,
    /// Present for models with 10 classes or more.
    pub top5_accuracy: Option<f64>,
    pub top5_correct: Option<usize>,
    /// Samples whose output has a NaN or an infinity. They count as wrong.
    pub non_finite_outputs: usize,
    pub per_class: Vec<ClassReport>,
    /// Present when a reference model ran on the same samples.
    pub reference_comparison: Option<Comparison>,
    /// What compression did, when the model was compressed first.
    pub compression: Option<crate::compress::CompressReport>,
    pub timing: Timing,
}

impl Report {
    /// Builds the per-class part of a report from `metrics`, naming the
    /// classes when `class_names` is given.
    pub fn per_class(metrics: &Metrics, class_names: Option<&[String]>) -> Vec<ClassReport> {
        metrics
            .per_class
            .iter()
            .enumerate()
            .map(|(class, counts)| ClassReport {
                class,
                name: class_names.and_then(|names| names.get(class)).cloned(),
                support: counts.support,
                correct: counts.correct,
                accuracy: counts.accuracy(),
            })
            .collect()
    }
}

fn percent(value: f64) -> String {
    format!("{:.2}%", value * 100.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(compression) = &self.compression {
            writeln!(f, "{compression}")?;
        }
        let threads = self.threads.map_or(String::new(), |t| format!(", {t} thread(s)"));
        let compressed = if self.compression.is_some() { "compressed, " } else { "" };
        writeln!(f, "model:      {} ({compressed}{}, batch {}{threads})", self.model, self.engine, self.batch)?;
        writeln!(f, "data:       {} ({} samples, {} classes)", self.data, self.samples, self.classes)?;
        writeln!(f, "top-1:      {} ({} / {})", percent(self.top1_accuracy), self.top1_correct, self.samples)?;
        if let (Some(accuracy), Some(correct)) = (self.top5_accuracy, self.top5_correct) {
            writeln!(f, "top-5:      {} ({correct} / {})", percent(accuracy), self.samples)?;
        }
        if self.non_finite_outputs > 0 {
            writeln!(f, "warning:    {} output row(s) contain NaN or infinity and count as wrong", self.non_finite_outputs)?;
        }

        writeln!(f)?;
        self.fmt_per_class(f)?;

        if let (Some(reference), Some(comparison)) = (&self.reference, &self.reference_comparison) {
            writeln!(f)?;
            let engine = self.reference_engine.as_deref().unwrap_or(&self.engine);
            // The default reference of a compressed model is the same file
            // without compression.
            let uncompressed = if self.compression.is_some() && *reference == self.model { "uncompressed, " } else { "" };
            writeln!(f, "reference:  {reference} ({uncompressed}{engine})")?;
            writeln!(
                f,
                "  top-1 agreement:         {} ({} / {})",
                percent(comparison.top1_agreement),
                comparison.top1_agreeing,
                self.samples
            )?;
            writeln!(f, "  mean KL(ref || model):   {:.3e} nats", comparison.mean_kl_divergence)?;
            writeln!(f, "  max abs error:           {:.3e}", comparison.max_abs_error)?;
            writeln!(f, "  mean abs error:          {:.3e}", comparison.mean_abs_error)?;
            if comparison.non_finite_rows > 0 {
                writeln!(
                    f,
                    "  {} sample(s) with NaN or infinity in either output are left out of KL and errors",
                    comparison.non_finite_rows
                )?;
            }
        }

        writeln!(f)?;
        let timing = &self.timing;
        writeln!(
            f,
            "throughput: {:.1} samples/s ({:.2} s in model runs)",
            timing.samples_per_second, timing.model_seconds
        )?;
        write!(
            f,
            "time:       {:.2} s in the evaluation loop, {:.2} s before it to prepare the model(s)",
            timing.total_seconds, timing.prepare_seconds
        )
    }
}

impl Report {
    fn fmt_per_class(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<&ClassReport> = self.per_class.iter().collect();
        if rows.len() > MAX_CLASSES_LISTED {
            // Classes without samples have no accuracy and are left out.
            rows.retain(|row| row.accuracy.is_some());
            rows.sort_by(|a, b| a.accuracy.unwrap_or(0.0).total_cmp(&b.accuracy.unwrap_or(0.0)).then(a.class.cmp(&b.class)));
            rows.truncate(WORST_CLASSES_LISTED);
            writeln!(f, "per class ({} lowest accuracies of {}; --json lists all):", rows.len(), self.per_class.len())?;
        } else {
            writeln!(f, "per class:")?;
        }

        let name_width = rows.iter().filter_map(|row| row.name.as_ref()).map(|name| name.chars().count()).max();
        match name_width {
            Some(width) => writeln!(f, "  {:>5}  {:<width$}  {:>8}  {:>8}  {:>8}", "class", "name", "support", "correct", "accuracy")?,
            None => writeln!(f, "  {:>5}  {:>8}  {:>8}  {:>8}", "class", "support", "correct", "accuracy")?,
        }
        for row in rows {
            let accuracy = row.accuracy.map_or("-".to_string(), percent);
            match name_width {
                Some(width) => {
                    let name = row.name.as_deref().unwrap_or("");
                    writeln!(f, "  {:>5}  {name:<width$}  {:>8}  {:>8}  {accuracy:>8}", row.class, row.support, row.correct)?
                }
                None => writeln!(f, "  {:>5}  {:>8}  {:>8}  {accuracy:>8}", row.class, row.support, row.correct)?,
            }
        }
        Ok(())
    }
}
