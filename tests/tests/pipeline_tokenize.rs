//! The real `tokenize` stage through the driver: the cpu-smoke profile's `tokenize` node of the
//! repository's pipeline.yaml, run in a temp project (its synthetic corpus needs no raw files).

use pgolf_e2e::project::{line_of, status_of, TestProject};
use pgolf_e2e::workspace_root;
use pgolf_store::files;
use pgolf_store::Manifest;

#[test]
fn cpu_smoke_tokenize_runs_through_the_driver_and_is_then_reused() {
    let yaml = std::fs::read_to_string(workspace_root().join("pipeline.yaml")).unwrap();
    let p = TestProject::new(&yaml);
    let out = p.ok(&["run", "tokenize"]);
    assert_eq!(status_of(&out, "tokenize"), "ran", "{out}");

    let dir = p.run_dir_of(&out, "tokenize", "tokenize");
    let manifest = Manifest::read(&dir).unwrap();
    manifest.verify_hashes(&dir).unwrap();
    assert_eq!(manifest.headline["vocab_size"], 260);
    assert_eq!(manifest.headline["val_docs"], 200);
    for file in [
        "fineweb_val_000000.bin",
        "fineweb_train_000000.bin",
        files::DOC_TABLE,
        files::TOKENIZER_INFO,
    ] {
        assert!(
            manifest.outputs.iter().any(|o| o.path == file),
            "{file} missing from {:?}",
            manifest.outputs
        );
    }
    assert!(
        line_of(&out, "tokenize").contains("vocab_size=260"),
        "{out}"
    );

    let again = p.ok(&["run", "tokenize"]);
    assert_eq!(status_of(&again, "tokenize"), "reused", "{again}");
}
