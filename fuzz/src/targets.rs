//! The targets. Each takes one file's bytes; see the crate docs for what counts as a defect.

use std::collections::BTreeMap;
use std::path::Path;

use pgolf_data::sidecar::read_sidecar;
use pgolf_data::sp_model::ModelProto;
use pgolf_data::{write_shard, Shard, TokenStream};
use pgolf_evaluator::{flat, score, val_target_bytes, val_tokens, Artifact, Model};
use pgolf_quant::{encode_frame, Codec, Compression};
use pgolf_store::{files::MANIFEST, run_key, Manifest};
use pipeline::project::Project;

use crate::{assert_names, scratch};

/// A token shard (`fineweb_*_NNNNNN.bin`), read by pgolf-data (train, tokenize's import) and by
/// the counted evaluator: both must accept the same files, with the same tokens, and name the
/// file when they refuse one.
pub fn shard(data: &[u8]) {
    let path = scratch("shard").join("fineweb_val_000000.bin");
    std::fs::write(&path, data).expect("write the input");
    let ours = Shard::open(&path);
    let counted = pgolf_evaluator::read_shard(&path);
    match (&ours, &counted) {
        (Ok(s), Ok(t)) => assert_eq!(s.tokens(), t.as_slice(), "the two readers' tokens differ"),
        (Err(a), Err(b)) => {
            assert_names(a, &path);
            assert_names(b, &path);
        }
        (a, b) => panic!(
            "pgolf-data and the counted evaluator disagree on a shard: {:?} vs {:?}",
            a.as_ref().map(|s| s.len()).map_err(|e| format!("{e:#}")),
            b.as_ref().map(|t| t.len()).map_err(|e| format!("{e:#}"))
        ),
    }
    if let Ok(s) = ours {
        // The sequential loader over it (train's stream): wraps around, never past the end.
        match TokenStream::open(std::slice::from_ref(&path)) {
            Ok(mut stream) => {
                let got = stream.take(s.len() + 3);
                let cycled = s.tokens().iter().cycle().take(got.len());
                assert!(
                    got.iter().eq(cycled),
                    "the stream is not the shard, repeated"
                );
            }
            Err(e) => {
                assert!(
                    s.is_empty(),
                    "a valid non-empty shard does not stream: {e:#}"
                );
                assert_names(&e, &path);
            }
        }
    }
}

/// A byte sidecar (`fineweb_val_bytes_NNNNNN.bin`) beside a token shard the harness writes: as
/// many tokens as the sidecar's header claims (when that is small, so the reader gets past its
/// count check), a BOS every 1–8 tokens (from the input's last byte). Read by pgolf-data
/// (tokenize's import) and by the counted evaluator (its byte denominator).
pub fn sidecar(data: &[u8]) {
    let dir = scratch("sidecar");
    let shard_path = dir.join("fineweb_val_000000.bin");
    let side = dir.join("fineweb_val_bytes_000000.bin");
    let claimed = data
        .get(8..12)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let n = match claimed {
        Some(c) if (0..=1 << 16).contains(&c) => c as usize,
        _ => data.len().saturating_sub(1024) / 2,
    };
    let every = data.last().map_or(1, |b| (b % 8) as usize + 1);
    let tokens: Vec<u16> = (0..n)
        .map(|i| match i % every {
            0 => 1,
            _ => 4 + (i % 256) as u16,
        })
        .collect();
    write_shard(&shard_path, &tokens).expect("write the token shard");
    std::fs::write(&side, data).expect("write the input");
    let shard = Shard::open(&shard_path).expect("the harness's own shard reads");
    let ours = read_sidecar(&side, &shard, 1);
    match &ours {
        Ok(counts) => {
            assert_eq!(counts.len(), n, "one count per token");
            for (i, t) in tokens.iter().enumerate() {
                assert!(*t != 1 || counts[i] == 0, "a BOS with bytes was accepted");
            }
        }
        Err(e) => assert_names(e, &side),
    }
    // The counted evaluator reads the same folder: the val stream, then its bytes.
    let stream = val_tokens(&dir).expect("the counted evaluator reads the harness's shard");
    assert_eq!(stream, tokens);
    let lut = pgolf_evaluator::ByteLut::byte260();
    match val_target_bytes(&dir, &stream, &lut) {
        Ok(bytes) => assert_eq!(bytes.len(), n),
        Err(e) => {
            assert_names(&e, &dir);
            // Both read the official layout only (header, one u16 per token): what pgolf-data
            // accepts, the scorer must accept.
            assert!(
                ours.is_err(),
                "pgolf-data reads the sidecar, the counted evaluator refuses it: {e:#}"
            );
        }
    }
}

/// An artifact file as it is on disk (frame, chunk table, compressed chunks): the frame checks
/// and every decompressor. Only a body whose BLAKE3 matches gets further (see [`artifact_body`]).
pub fn artifact(data: &[u8]) {
    if let Ok(a) = Artifact::from_bytes(data) {
        use_artifact(&a);
    }
}

/// An artifact body (the JSON directory, then the payload), framed by the harness (no
/// compression, its hash right), so the fuzzer works on the container and the decoder: ranges,
/// encodings, dequantization, the model built from the config and its tensors, one scored window.
pub fn artifact_body(data: &[u8]) {
    let none = Compression {
        codec: Codec::None,
        chunks: 1,
        ..Compression::default()
    };
    let file = encode_frame(data, &none).expect("frame a body");
    if let Ok(a) = Artifact::from_bytes(&file) {
        use_artifact(&a);
    }
}

/// What the evaluator does with a read artifact: every tensor decoded, the model, a score.
fn use_artifact(a: &Artifact) {
    let _ = a.decode_all();
    let Ok(model) = Model::from_artifact(a) else {
        return;
    };
    let cfg = &model.cfg;
    let n = cfg.seq_len.min(8) + 1;
    let tokens: Vec<u16> = (0..n).map(|i| (i % cfg.vocab_size) as u16).collect();
    let bytes = vec![1u32; n];
    let windows = flat(n - 1, cfg.seq_len).expect("windows over a short stream");
    let sums = score(&model, &tokens, &bytes, &windows, |_| {}).expect("a valid model scores");
    let _ = sums.bpb();
}

/// `manifest.json` of a run folder holding one file: read, verified (sizes, hashes), its key
/// recomputed; whatever it lists, verification never looks outside the run folder.
pub fn manifest(data: &[u8]) {
    let dir = scratch("manifest").join("run");
    std::fs::create_dir_all(&dir).expect("a run folder");
    std::fs::write(dir.join("weights.bin"), b"0123456789").expect("an output file");
    let path = dir.join(MANIFEST);
    std::fs::write(&path, data).expect("write the input");
    let m = match Manifest::read(&dir) {
        Ok(m) => m,
        Err(e) => return assert_names(&e, &path),
    };
    for hashes in [false, true] {
        let verdict = match hashes {
            false => m.verify_sizes(&dir),
            true => m.verify_hashes(&dir),
        };
        match verdict {
            Ok(()) => {
                let listed: Vec<&str> = m.outputs.iter().map(|o| o.path.as_str()).collect();
                assert_eq!(
                    listed,
                    ["weights.bin"],
                    "a verified manifest lists another folder"
                );
            }
            Err(e) => assert_names(&e, &dir),
        }
    }
    let inputs: BTreeMap<String, String> = m
        .inputs
        .iter()
        .map(|(n, i)| (n.clone(), i.key.clone()))
        .collect();
    let _ = run_key(
        &m.stage,
        &m.identity,
        &m.params,
        &inputs,
        m.device.world_size,
    );
    let _ = pipeline::project::short(&m.key);
    let _ = m.headline_f64("val_bpb");
    let text = serde_json::to_vec(&m).expect("a manifest that was read serialises");
    serde_json::from_slice::<Manifest>(&text).expect("a manifest written reads back");
}

/// A bundle for `pipeline import`: the input is the tar stream, which the harness compresses
/// (level 1), unless it already starts with a zstd frame's magic (then it is the file as it is).
/// Whatever comes of it: no run under `out/` that does not verify (a torn or unverified import),
/// no staging folder or lock left, nothing written outside `out/`, an error naming the bundle.
pub fn bundle(data: &[u8]) {
    let root = scratch("bundle");
    let project_dir = root.join("project");
    let out = project_dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&project_dir).expect("a project folder");
    let yaml = project_dir.join("pipeline.yaml");
    std::fs::write(&yaml, "stages: {}\n").expect("a pipeline.yaml");
    let project = Project {
        yaml_display: yaml.display().to_string(),
        yaml,
        root: project_dir.clone(),
        out: out.clone(),
    };
    let file = root.join("bundle.tar.zst");
    let bytes = match data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        true => data.to_vec(),
        false => zstd::encode_all(data, 1).expect("compress the tar"),
    };
    std::fs::write(&file, bytes).expect("write the bundle");
    if let Err(e) = pipeline::import::import(&project, &file) {
        assert_names(&e, &file);
    }
    assert_eq!(
        names(&root),
        ["bundle.tar.zst", "project"],
        "an import wrote beside the project"
    );
    let mut top = names(&project_dir);
    top.retain(|n| n != "out");
    assert_eq!(top, ["pipeline.yaml"], "an import wrote outside out/");
    if !out.exists() {
        return;
    }
    for stage in names(&out) {
        assert!(
            !stage.starts_with(".import-"),
            "staging folder {stage} left"
        );
        if stage == ".locks" {
            assert!(names(&out.join(".locks")).is_empty(), "an import lock left");
            continue;
        }
        for key in names(&out.join(&stage)) {
            if key == ".locks" {
                continue;
            }
            let dir = out.join(&stage).join(&key);
            let m = Manifest::read(&dir).unwrap_or_else(|e| panic!("imported, unreadable: {e:#}"));
            assert_eq!(
                (m.stage.as_str(), m.key.as_str()),
                (stage.as_str(), key.as_str())
            );
            m.verify_hashes(&dir)
                .unwrap_or_else(|e| panic!("imported, does not verify: {e:#}"));
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list a scratch folder")
        .map(|e| {
            e.expect("a folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// `pipeline.yaml`: parsed, then the graph of every profile (and of none) built and checked —
/// inputs first, every input a node; errors lead with the file's name.
pub fn pipeline_yaml(data: &[u8]) {
    const NAME: &str = "pipeline.yaml";
    let text = String::from_utf8_lossy(data);
    let file = match pipeline::config::parse(&text, NAME) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.starts_with(NAME),
                "the error does not lead with the file: {msg}"
            );
            return;
        }
    };
    let mut profiles: Vec<Option<&str>> = vec![None];
    profiles.extend(file.profiles.keys().map(|p| Some(p.as_str())));
    for requested in profiles {
        let profile = match pipeline::graph::select_profile(&file, NAME, requested) {
            Ok(p) => p,
            Err(e) => {
                assert!(format!("{e:#}").starts_with(NAME));
                continue;
            }
        };
        let graph = match pipeline::graph::Graph::build(&file, NAME, profile.as_deref()) {
            Ok(g) => g,
            Err(e) => {
                assert!(format!("{e:#}").starts_with(NAME), "{e:#}");
                continue;
            }
        };
        let order: Vec<&String> = graph.nodes.keys().collect();
        for (i, node) in graph.nodes.values().enumerate() {
            for spec in node.inputs.values() {
                if let Some(up) = spec.upstream() {
                    let at = order.iter().position(|n| n.as_str() == up);
                    assert!(
                        at.is_some_and(|j| j < i),
                        "{up} is not before {}",
                        node.name
                    );
                }
            }
            let closure = graph.upstream_closure(&node.name);
            assert!(closure.contains(&node.name));
        }
    }
}

/// A SentencePiece `.model`: the counted evaluator reads its protobuf by hand, pgolf-data's
/// stages through prost and then the evaluator's rule. Where both accept a file, their byte
/// tables must be the same (else pgolf's BPB and the artifact's own differ).
pub fn tokenizer_model(data: &[u8]) {
    let path = scratch("tokenizer").join("tokenizer.model");
    std::fs::write(&path, data).expect("write the input");
    let counted = pgolf_evaluator::ByteLut::sentencepiece(data);
    let ours = pgolf_data::ByteLut::from_model_file(&path);
    if let Err(e) = &ours {
        assert_names(e, &path);
    }
    if let (Ok(c), Ok(o)) = (&counted, &ours) {
        assert_eq!(c.base, o.base_bytes, "byte counts differ");
        assert_eq!(c.space, o.has_leading_space, "space flags differ");
        assert_eq!(c.boundary, o.is_boundary, "boundaries differ");
    }
    if let Ok(c) = &counted {
        let ids: Vec<u16> = (0..c.base.len().min(64) as u16).collect();
        c.target_bytes(&ids).expect("ids inside the table");
    }
    if let Ok(m) = ModelProto::decode_bytes(data) {
        for p in &m.pieces {
            let _ = p.piece_type();
        }
    }
}
