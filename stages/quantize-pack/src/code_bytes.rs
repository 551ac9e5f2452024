//! Code bytes: the brotli-11 size of the tar of decode-and-evaluate sources that the build script
//! embedded (docs/ARTIFACT.md "Size accounting").

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::{Read, Write};

static CODE_TAR: &[u8] = include_bytes!(env!("PGOLF_CODE_TAR"));

#[derive(Serialize)]
pub struct CodeFile {
    pub path: String,
    pub bytes: u64,
}

pub struct Code {
    pub files: Vec<CodeFile>,
    pub tar_bytes: u64,
    /// brotli quality 11 (window 22) of the tar.
    pub compressed_bytes: u64,
}

pub fn measure() -> Result<Code> {
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(CODE_TAR);
    for entry in archive.entries().context("embedded code tar")? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        files.push(CodeFile {
            path,
            bytes: data.len() as u64,
        });
    }
    let mut compressed = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut compressed, 1 << 16, 11, 22);
        w.write_all(CODE_TAR)?;
    }
    Ok(Code {
        files,
        tar_bytes: CODE_TAR.len() as u64,
        compressed_bytes: compressed.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    /// The counted code is the evaluator crate's build inputs, found from the dependency graph
    /// (not its tests), and stays within the budget of docs/ARTIFACT.md.
    #[test]
    fn the_counted_code_is_the_evaluator_crate_and_small() {
        let code = super::measure().unwrap();
        let paths: Vec<&str> = code.files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"shared/evaluator/Cargo.toml"), "{paths:?}");
        assert!(
            paths.contains(&"shared/evaluator/src/model.rs"),
            "{paths:?}"
        );
        assert!(
            paths
                .iter()
                .all(|p| p.starts_with("shared/evaluator/src/")
                    || *p == "shared/evaluator/Cargo.toml"),
            "only the evaluator's build inputs are counted: {paths:?}"
        );
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        eprintln!(
            "code: {} files, {} source bytes, tar {} bytes, brotli-11 {} bytes",
            code.files.len(),
            code.files.iter().map(|f| f.bytes).sum::<u64>(),
            code.tar_bytes,
            code.compressed_bytes
        );
        assert!(
            code.compressed_bytes <= 40_000,
            "{} code bytes",
            code.compressed_bytes
        );
    }
}
