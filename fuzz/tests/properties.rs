//! Where structure matters more than bytes: property tests (proptest) that what pgolf writes it
//! reads back unchanged — shards and sidecars, artifacts in every codec and encoding, manifests,
//! bundles through `pipeline import`, pipeline.yaml DAGs — and that a cycle in a generated DAG is
//! always the one-line cycle error.

use half::f16;
use pgolf_data::sidecar::read_sidecar;
use pgolf_data::{write_shard, Shard};
use pgolf_evaluator::Artifact;
use pgolf_quant::container::{decode_body, encode_body};
use pgolf_quant::{encode_artifact, Codec, Compression, DType, Encoding, Scale, StoredTensor};
use pgolf_store::Manifest;
use proptest::prelude::*;
use std::fs;

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::None),
        Just(Codec::Zstd),
        Just(Codec::Brotli),
        Just(Codec::Zlib),
        Just(Codec::Lzma)
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::Bf16)]
}

/// One stored tensor of a small random shape, in any encoding, with values in range.
fn tensor(i: usize) -> impl Strategy<Value = StoredTensor> {
    (
        prop::collection::vec(1usize..5, 1..4),
        dtype(),
        0u8..4,
        2u8..=8,
        any::<u64>(),
    )
        .prop_map(move |(shape, dt, kind, bits, seed)| {
            let numel: usize = shape.iter().product();
            let r = (1i32 << (bits - 1)) - 1;
            let q: Vec<i8> = (0..numel)
                .map(|j| ((seed.wrapping_mul(j as u64 + 1) >> 7) as i32 % (r + 1)) as i8)
                .collect();
            let encoding = match kind {
                0 if shape.len() >= 2 => Encoding::Rows {
                    bits,
                    q,
                    scales: (0..shape[0])
                        .map(|k| f16::from_f32(0.01 * (k + 1) as f32))
                        .collect(),
                },
                1 => Encoding::Tensor {
                    bits,
                    q,
                    scale: Scale::F32(0.5),
                },
                2 => Encoding::Tensor {
                    bits,
                    q,
                    scale: Scale::F16(f16::from_f32(0.25)),
                },
                _ => Encoding::Raw {
                    stored: dt,
                    bytes: (0..numel * dt.size())
                        .map(|j| (seed >> (j % 8)) as u8 & 0x3f)
                        .collect(),
                },
            };
            StoredTensor {
                name: format!("t{i}"),
                shape,
                dtype: dt,
                encoding,
                lqer: None,
                layout: Default::default(),
            }
        })
}

fn tensors() -> impl Strategy<Value = Vec<StoredTensor>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(tensor).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn artifacts_read_back_what_was_written(ts in tensors(), c in codec(), chunks in 1u32..5, shuffle in 1u8..4) {
        let config = serde_json::json!({"vocab_size": 16, "note": "any JSON"});
        let body = encode_body(&config, &ts).unwrap();
        let (cfg, back) = decode_body(&body).unwrap();
        prop_assert_eq!(&cfg, &config);
        prop_assert_eq!(&back, &ts);
        let compression = Compression {
            codec: c,
            level: Some(1),
            shuffle: Some(shuffle),
            chunks,
            ..Compression::default()
        };
        let file = encode_artifact(&config, &ts, &compression).unwrap();
        let a = Artifact::from_bytes(&file).unwrap();
        prop_assert_eq!(&a.tensors, &ts);
        prop_assert_eq!((a.codec, a.shuffle, a.file_bytes), (c, shuffle, file.len() as u64));
        for t in &ts {
            prop_assert_eq!(a.decode(&t.name).unwrap().data, t.dequantize().unwrap());
        }
        // Any one byte cut off is refused (never read as another artifact).
        prop_assert!(Artifact::from_bytes(&file[..file.len() - 1]).is_err());
    }

    #[test]
    fn shards_and_sidecars_read_back(tokens in prop::collection::vec(any::<u16>(), 0..300), wide in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fineweb_val_000000.bin");
        write_shard(&path, &tokens).unwrap();
        let shard = Shard::open(&path).unwrap();
        prop_assert_eq!(shard.tokens(), tokens.as_slice());
        prop_assert_eq!(pgolf_evaluator::read_shard(&path).unwrap(), tokens.clone());
        // A sidecar for it: 0 at every BOS (id 1), as u16 counts (official) or u32 (refused).
        let counts: Vec<u32> = tokens.iter().map(|&t| if t == 1 { 0 } else { t as u32 % 7 + 65_520 }).collect();
        let side = dir.path().join("fineweb_val_bytes_000000.bin");
        let mut bytes = fs::read(&path).unwrap()[..1024].to_vec();
        for c in &counts {
            match wide {
                true => bytes.extend_from_slice(&c.to_le_bytes()),
                false => bytes.extend_from_slice(&(*c as u16).to_le_bytes()),
            }
        }
        fs::write(&side, bytes).unwrap();
        match wide && !tokens.is_empty() {
            true => prop_assert!(read_sidecar(&side, &shard, 1).is_err()),
            false => prop_assert_eq!(read_sidecar(&side, &shard, 1).unwrap(), counts),
        }
    }

    #[test]
    fn manifests_and_bundles_round_trip(files in prop::collection::vec(("[a-z]{1,6}(/[a-z]{1,6})?", prop::collection::vec(any::<u8>(), 0..64)), 1..5), wall in 0u32..100_000) {
        let run = tempfile::tempdir().unwrap();
        let mut files = files;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        // One name as both a file and a folder cannot exist: keep the first.
        files.dedup_by(|b, a| b.0 == a.0 || b.0.starts_with(&format!("{}/", a.0)) || a.0.starts_with(&format!("{}/", b.0)));
        let listed: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
        let (stage, key, mut m) = pgolf_fuzz::seeds::seal(run.path(), "train", &listed, &[]).unwrap();
        m.wall_seconds = wall as f64 / 8.0;
        fs::write(run.path().join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        let back = Manifest::read(run.path()).unwrap();
        prop_assert_eq!(&back, &m);
        back.verify_hashes(run.path()).unwrap();
        // Through a bundle into a fresh project's out/: the same run, verified.
        let tar = pgolf_fuzz::seeds::bundle_tar(&[(&stage, &key, run.path())]).unwrap();
        let project = tempfile::tempdir().unwrap();
        fs::write(project.path().join("pipeline.yaml"), "stages: {}\n").unwrap();
        let bundle = project.path().join("b.tar.zst");
        fs::write(&bundle, zstd::encode_all(tar.as_slice(), 1).unwrap()).unwrap();
        let p = pipeline::project::Project::locate(Some(&project.path().join("pipeline.yaml"))).unwrap();
        pipeline::import::import(&p, &bundle).unwrap();
        let placed = p.run_dir(&stage, &key);
        prop_assert_eq!(Manifest::read(&placed).unwrap(), m);
        Manifest::read(&placed).unwrap().verify_hashes(&placed).unwrap();
    }

    #[test]
    fn generated_dags_load_in_dependency_order(edges in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 0..3), 1..12), back_edge in any::<Option<prop::sample::Index>>()) {
        // Node i reads from some earlier nodes; written in reverse so the file order is not the
        // dependency order.
        let n = edges.len();
        let mut inputs: Vec<Vec<usize>> = edges.iter().enumerate().map(|(i, ups)| {
            let mut v: Vec<usize> = if i == 0 { vec![] } else { ups.iter().map(|u| u.index(i)).collect() };
            v.sort();
            v.dedup();
            v
        }).collect();
        // Optionally one edge from the last node back into node 0's inputs: a cycle when node 0 ≠ last
        // and the last reaches 0, i.e. when the last node reads (transitively) from 0.
        let reaches_zero = |inputs: &Vec<Vec<usize>>, from: usize| {
            let mut todo = vec![from];
            let mut seen = vec![false; n];
            while let Some(x) = todo.pop() {
                if x == 0 { return true; }
                if !seen[x] { seen[x] = true; todo.extend(&inputs[x]); }
            }
            false
        };
        let cycle = back_edge.is_some() && n > 1 && reaches_zero(&inputs, n - 1);
        if cycle {
            inputs[0].push(n - 1);
        }
        let mut yaml = String::from("stages:\n");
        for i in (0..n).rev() {
            yaml.push_str(&format!("  n{i}:\n    params: {{seed: {i}}}\n    inputs: {{"));
            let parts: Vec<String> = inputs[i].iter().map(|u| format!("in{u}: n{u}")).collect();
            yaml.push_str(&parts.join(", "));
            yaml.push_str("}\n");
        }
        let file = pipeline::config::parse(&yaml, "p.yaml").unwrap();
        match pipeline::graph::Graph::build(&file, "p.yaml", None) {
            Ok(g) => {
                prop_assert!(!cycle, "a cycle was accepted:\n{}", yaml);
                let order: Vec<&str> = g.nodes.keys().map(String::as_str).collect();
                for (i, ups) in inputs.iter().enumerate() {
                    let at = |name: String| order.iter().position(|o| *o == name).unwrap();
                    for u in ups {
                        let (up, down) = (at(format!("n{u}")), at(format!("n{i}")));
                        prop_assert!(up < down, "n{} after n{}", u, i);
                    }
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(cycle && msg.starts_with("p.yaml: cycle: "), "{}", msg);
            }
        }
    }
}
