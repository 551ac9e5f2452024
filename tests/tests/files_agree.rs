//! The counted evaluator builds alone from its source tar, so it keeps its own copies of the file
//! names it opens; they must be the stage contract's (pgolf-store `files`), or `pgolf-evaluate DIR`
//! would look for a file no stage writes.

use pgolf_store::files;

#[test]
fn the_evaluators_file_names_are_the_contracts() {
    assert_eq!(pgolf_evaluator::ARTIFACT_FILE, files::ARTIFACT);
    assert_eq!(
        pgolf_evaluator::TOKENIZER_MODEL_FILE,
        files::TOKENIZER_MODEL
    );
    assert_eq!(pgolf_evaluator::TOKENIZER_INFO_FILE, files::TOKENIZER_INFO);
}

#[test]
fn no_two_contract_files_share_a_name() {
    let names = [
        files::MANIFEST,
        files::TOKENIZER_INFO,
        files::TOKENIZER_MODEL,
        files::DOC_TABLE,
        files::WEIGHTS,
        files::EMA_WEIGHTS,
        files::SWA_WEIGHTS,
        files::MODEL_CONFIG,
        files::METRICS,
        files::TRAIN_LOG,
        files::FINALIZE_LOG,
        files::HESSIANS,
        files::CALIBRATION,
        files::ARTIFACT,
        files::TENSOR_TABLE,
        files::CODE_FILES,
        files::RESULTS,
        files::CHUNKS,
        files::SUMMARY,
        files::DECODED_WEIGHTS,
        files::ACTIVATIONS,
        files::REPORT_MD,
        files::REPORT_HTML,
        files::SUBMISSION,
        files::PROVENANCE,
    ];
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len());
}
