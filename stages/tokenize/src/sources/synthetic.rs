//! The synthetic corpus as a document stream: `docs` documents of the Markov source, drawn in
//! parallel (each document has its own random stream, so the order of drawing does not matter).

use rayon::prelude::*;
use std::sync::Arc;

use super::{Batches, RawDoc, BATCH_DOCS};
use crate::markov::MarkovSource;

pub fn synthetic_batches(source: Arc<MarkovSource>, docs: u64) -> Batches {
    let starts = (0..docs).step_by(BATCH_DOCS);
    Box::new(starts.map(move |start| {
        let end = (start + BATCH_DOCS as u64).min(docs);
        Ok((start..end)
            .into_par_iter()
            .map(|i| {
                let doc = source.sample(i);
                RawDoc {
                    id: format!("synthetic-{i:08}"),
                    text: doc.text,
                    source_bits: Some(doc.bits),
                }
            })
            .collect())
    }))
}
