//! Tokenizes a document stream on every core: a reader thread runs ahead, each batch is encoded in
//! parallel (rayon keeps the batch in order), and the corpus writer lays documents out in order.

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use pgolf_data::DocRecord;
use rayon::prelude::*;

use crate::corpus::{CorpusWriter, EncodedDoc};
use crate::sources::{read_ahead, Batches, RawDoc};
use crate::tokenizer::Tokenizer;

/// Batches the reader may run ahead of the encoder.
const READ_AHEAD: usize = 4;

pub fn tokenize_corpus(
    batches: Batches,
    tokenizer: &Tokenizer,
    mut writer: CorpusWriter,
    bar: &ProgressBar,
) -> Result<Vec<DocRecord>> {
    for batch in read_ahead(batches, READ_AHEAD) {
        let encoded: Vec<EncodedDoc> = batch?
            .into_par_iter()
            .map(|doc| encode(doc, tokenizer))
            .collect::<Result<_>>()?;
        bar.inc(encoded.len() as u64);
        for doc in encoded {
            writer.add(doc)?;
        }
    }
    bar.finish_and_clear();
    writer.finish()
}

fn encode(doc: RawDoc, tokenizer: &Tokenizer) -> Result<EncodedDoc> {
    let encoded = tokenizer
        .encode_document(&doc.text)
        .with_context(|| format!("document {}", doc.id))?;
    Ok(EncodedDoc {
        lut_bytes: tokenizer.lut.sequence_bytes(&encoded.tokens),
        // The original text's bytes, whatever the tokenizer saw.
        raw_bytes: Some(doc.text.len() as u64),
        source_bits: doc.source_bits,
        tokens: encoded.tokens,
        original_bytes: encoded.original_bytes,
        id: doc.id,
    })
}
