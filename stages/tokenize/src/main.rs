//! The tokenize stage: turns a corpus into upstream `.bin` token shards (val first, then train), a
//! doc table with every document's place and byte counts, and the tokenizer description. The
//! corpus is raw documents (`documents`, with an optional separate `val_documents`), official
//! shards to import (`shards`), or the built-in synthetic source (the `synthetic` param). With
//! `transform: caseops` each document is case-transformed before encoding, each val shard gets its
//! byte sidecar, and the doc table's raw bytes are still the original text's.

mod corpus;
mod encode;
mod import;
mod markov;
mod params;
mod sources;
mod summary;
mod tokenizer;

use anyhow::Result;
use pgolf_data::{write_doc_table, DocRecord};
use pgolf_store::files;
use pgolf_store::Stage;
use std::path::PathBuf;
use std::sync::Arc;

use corpus::CorpusWriter;
use markov::MarkovSource;
use params::{Params, Plan, Source};
use sources::Batches;
use summary::Summary;
use tokenizer::Tokenizer;

fn main() {
    pgolf_store::run_stage::<Params, _>("tokenize", env!("PGOLF_STAGE_IDENTITY"), tokenize);
}

fn tokenize(stage: &mut Stage<Params>) -> Result<()> {
    let plan = Plan::new(stage)?;
    let tokenizer = match &plan.tokenizer {
        Some(model) => Tokenizer::sentencepiece(model)?,
        None => Tokenizer::byte260(),
    };
    // Imported shards are already encoded: no text to transform.
    let tokenizer = match plan.source {
        Source::Shards(_) => tokenizer,
        _ => tokenizer.with_transform(plan.transform)?,
    };
    tokenizer.write_into(&stage.out)?;

    let docs = match &plan.source {
        Source::Shards(dir) => import::import_shards(dir, &tokenizer, &stage.out)?,
        Source::Documents { val, train } => {
            let (batches, expected) = document_stream(&plan, val.as_deref(), train)?;
            encode_corpus(stage, &plan, &tokenizer, batches, expected)?
        }
        Source::Synthetic(synthetic) => {
            let source = Arc::new(MarkovSource::new(synthetic.seed, synthetic.mean_doc_bytes)?);
            stage.headline("source_entropy_rate_bpb", source.entropy_rate_bpb());
            let batches = sources::synthetic_batches(source, synthetic.docs);
            encode_corpus(stage, &plan, &tokenizer, batches, synthetic.docs)?
        }
    };
    write_doc_table(&stage.out.join(files::DOC_TABLE), &docs)?;
    record_headline(stage, &tokenizer, &Summary::of(&docs));
    Ok(())
}

/// The documents in corpus order (val first), and how many to expect for the progress bar.
fn document_stream(
    plan: &Plan,
    val: Option<&[PathBuf]>,
    train: &[PathBuf],
) -> Result<(Batches, u64)> {
    let train_files = sources::document_files(train)?;
    let mut expected = sources::count_documents(&train_files)?;
    let mut batches = sources::document_batches(train_files);
    if let Some(val) = val {
        let val_files = sources::document_files(val)?;
        expected += plan.val_docs;
        let val_batches = sources::first_documents(
            sources::document_batches(val_files),
            plan.val_docs,
            "--in val_documents".into(),
        );
        batches = Box::new(val_batches.chain(batches));
    }
    let expected = expected.min(plan.max_docs.unwrap_or(u64::MAX));
    Ok((sources::limit_documents(batches, plan.max_docs), expected))
}

fn encode_corpus(
    stage: &Stage<Params>,
    plan: &Plan,
    tokenizer: &Tokenizer,
    batches: Batches,
    expected_docs: u64,
) -> Result<Vec<DocRecord>> {
    let writer = CorpusWriter::new(&stage.out, plan.val_docs, plan.shard_tokens);
    let bar = pgolf_store::progress::bar(expected_docs, "tokenize");
    encode::tokenize_corpus(batches, tokenizer, writer, &bar)
}

fn record_headline(stage: &mut Stage<Params>, tokenizer: &Tokenizer, summary: &Summary) {
    stage.headline("vocab_size", tokenizer.info.vocab_size);
    stage.headline("train_docs", summary.train_docs);
    stage.headline("val_docs", summary.val_docs);
    stage.headline("train_tokens", summary.train_tokens);
    stage.headline("val_tokens", summary.val_tokens);
    stage.headline("val_raw_bytes", summary.val_raw_bytes);
    stage.headline("val_raw_bytes_source", summary.val_raw_bytes_source);
    stage.headline("val_lut_bytes", summary.val_lut_bytes);
    if tokenizer.transform() == params::Transform::Caseops {
        stage.headline("transform", pgolf_data::caseops::NAME);
    }
    if let Some(bpb) = summary.source_entropy_bpb {
        stage.headline("source_entropy_bpb", bpb);
    }
}
