//! Stage identities change exactly when a file their build reads changes: computed on a copy of this
//! workspace's crates, and on small synthetic workspaces for the rules the real one does not show.

use pgolf_buildid::{closure_sources, identity};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn real_workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies the workspace's manifests, lock file and crate folders (without `target` and hidden
/// entries) into a temporary folder.
fn copy_workspace() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let from = real_workspace();
    for file in ["Cargo.toml", "Cargo.lock"] {
        fs::copy(from.join(file), tmp.path().join(file)).unwrap();
    }
    for dir in ["stages", "shared", "tests", "fuzz"] {
        copy_dir(&from.join(dir), &tmp.path().join(dir));
    }
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name == "target" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn stages(ws: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(ws.join("stages"))
        .unwrap()
        .map(|e| {
            let manifest = fs::read_to_string(e.unwrap().path().join("Cargo.toml")).unwrap();
            let table: toml::Table = manifest.parse().unwrap();
            table["package"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    out.sort();
    out
}

fn identities(ws: &Path) -> BTreeMap<String, String> {
    stages(ws)
        .into_iter()
        .map(|s| {
            let id = identity(ws, &s).unwrap();
            (s, id)
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut bytes = fs::read(path).unwrap();
    bytes.extend_from_slice(text.as_bytes());
    fs::write(path, bytes).unwrap();
}

/// The stages whose identity differs between `a` and `b`.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.keys().filter(|s| a[*s] != b[*s]).cloned().collect()
}

fn links_kernels(ws: &Path, stage: &str) -> bool {
    let kernels = ws.join("shared/kernels");
    closure_sources(ws, stage)
        .iter()
        .any(|f| f.starts_with(&kernels))
}

#[test]
fn a_kernel_edit_rekeys_exactly_the_stages_that_link_the_kernels() {
    let tmp = copy_workspace();
    let ws = tmp.path();
    let before = identities(ws);
    assert!(before.len() >= 9, "stages: {:?}", before.keys());
    assert_eq!(before, identities(ws), "identities are deterministic");
    for (stage, id) in &before {
        assert!(id.starts_with(&format!("{stage}@")), "{id}");
    }

    let cu = fs::read_dir(ws.join("shared/kernels/cuda"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cu"))
        .expect("a .cu file in shared/kernels/cuda");
    append(&cu, "\n// edited\n");
    let after = identities(ws);
    let rekeyed = changed(&before, &after);
    for stage in ["train", "ttt-eval"] {
        assert!(rekeyed.contains(&stage.to_string()), "{stage}: {rekeyed:?}");
    }
    for stage in ["tokenize", "report", "ema-finalize", "pipeline"] {
        assert!(
            !rekeyed.contains(&stage.to_string()),
            "{stage}: {rekeyed:?}"
        );
    }
    // In general (quantize-pack included, whichever way its edges go): re-keyed iff linked.
    for stage in before.keys() {
        assert_eq!(
            rekeyed.contains(stage),
            links_kernels(ws, stage),
            "{stage}: re-keyed {rekeyed:?}"
        );
    }
}

#[test]
fn cpp_shims_and_build_scripts_are_part_of_the_identity() {
    let tmp = copy_workspace();
    let ws = tmp.path();
    let before = identity(ws, "train").unwrap();
    append(
        &ws.join("shared/kernels/csrc/current_stream.cpp"),
        "\n// edited\n",
    );
    let after_cpp = identity(ws, "train").unwrap();
    assert_ne!(before, after_cpp);
    append(&ws.join("shared/runtime/build.rs"), "\n// edited\n");
    assert_ne!(after_cpp, identity(ws, "train").unwrap());
}

#[test]
fn a_model_edit_rekeys_the_model_stages_and_not_quantize_pack() {
    let tmp = copy_workspace();
    let ws = tmp.path();
    let before = identities(ws);
    append(&ws.join("shared/model/src/lib.rs"), "\n// edited\n");
    let rekeyed = changed(&before, &identities(ws));
    for stage in ["train", "gptq-calibrate", "ttt-eval", "ngram-eval"] {
        assert!(rekeyed.contains(&stage.to_string()), "{stage}: {rekeyed:?}");
    }
    // quantize-pack needs a device, not the model: it reaches libtorch through pgolf-runtime.
    for stage in [
        "quantize-pack",
        "ema-finalize",
        "tokenize",
        "report",
        "pipeline",
    ] {
        assert!(
            !rekeyed.contains(&stage.to_string()),
            "{stage}: {rekeyed:?}"
        );
    }
}

#[test]
fn test_bench_and_example_files_rekey_nothing() {
    let tmp = copy_workspace();
    let ws = tmp.path();
    let before = identities(ws);
    let mut edited = 0;
    for group in ["stages", "shared"] {
        for krate in fs::read_dir(ws.join(group)).unwrap() {
            let krate = krate.unwrap().path();
            for sub in ["tests", "examples"] {
                let Ok(entries) = fs::read_dir(krate.join(sub)) else {
                    continue;
                };
                for file in entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()) {
                    append(&file, "\n// edited\n");
                    edited += 1;
                }
            }
        }
    }
    fs::write(ws.join("shared/kernels/tests/new_test.rs"), "// new\n").unwrap();
    fs::create_dir_all(ws.join("shared/model/benches")).unwrap();
    fs::write(ws.join("shared/model/benches/b.rs"), "// new\n").unwrap();
    fs::write(ws.join("shared/kernels/cuda/.scratch.cu"), "// hidden\n").unwrap();
    assert!(edited > 5, "only {edited} test/example files found");
    assert_eq!(changed(&before, &identities(ws)), Vec::<String>::new());
}

#[test]
fn lock_and_workspace_manifest_rekey_every_stage() {
    let tmp = copy_workspace();
    let ws = tmp.path();
    let before = identities(ws);
    append(&ws.join("Cargo.lock"), "\n");
    let after_lock = identities(ws);
    assert_eq!(changed(&before, &after_lock).len(), before.len());
    append(&ws.join("Cargo.toml"), "\n");
    assert_eq!(changed(&after_lock, &identities(ws)).len(), before.len());
}

#[test]
fn closure_sources_lists_every_kind_of_file_and_no_test_file() {
    let ws = real_workspace();
    let files = closure_sources(&ws, "train");
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted);
    let has = |suffix: &str| files.iter().any(|f| f.to_string_lossy().ends_with(suffix));
    for suffix in [
        "shared/kernels/cuda/common.cuh",
        "shared/kernels/csrc/current_stream.cpp",
        "shared/runtime/build.rs",
        "shared/runtime/csrc/cuda_graph.cpp",
        "shared/store/Cargo.toml",
        "shared/buildid/src/lib.rs",
        "stages/train/src/main.rs",
    ] {
        assert!(has(suffix), "{suffix} missing");
    }
    let ws_norm = ws.canonicalize().unwrap();
    for f in &files {
        let rel = f.canonicalize().unwrap();
        let rel = rel.strip_prefix(&ws_norm).unwrap();
        let top: Vec<_> = rel.components().take(3).collect();
        let third = top
            .get(2)
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        assert!(
            !matches!(third.as_deref(), Some("tests" | "benches" | "examples")),
            "{}",
            rel.display()
        );
    }
    // tokenize does not read the model, the kernels or libtorch glue.
    let tokenize = closure_sources(&ws, "tokenize");
    let model = ws.join("shared/model");
    assert!(tokenize.iter().all(|f| !f.starts_with(&model)));
}

/// A synthetic workspace: `stages/s` → `shared/lib` (optional `shared/heavy` behind feature
/// `big`), and `shared/lib` includes a file outside its directory.
fn synthetic(default_features: bool, lib_default: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let write = |rel: &str, text: &str| {
        let path = ws.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"stages/*\", \"shared/*\"]\n\n[workspace.dependencies]\n\
         lib = { path = \"shared/lib\", default-features = false }\n",
    );
    write("Cargo.lock", "version = 4\n");
    let features = if default_features {
        "features = [\"big\"]"
    } else {
        "features = []"
    };
    write(
        "stages/s/Cargo.toml",
        &format!(
            "[package]\nname = \"s\"\n\n[dependencies]\nlib = {{ workspace = true, {features} }}\n\
             serde = \"1\"\n"
        ),
    );
    write("stages/s/src/main.rs", "fn main() {}\n");
    write(
        "shared/lib/Cargo.toml",
        &format!(
            "[package]\nname = \"lib\"\n\n[features]\ndefault = [{lib_default}]\nbig = [\"dep:heavy\"]\n\n\
             [dependencies]\nheavy = {{ path = \"../heavy\", optional = true }}\n"
        ),
    );
    write(
        "shared/lib/src/lib.rs",
        "pub const T: &str = include_str!(\"../../../assets/table.txt\");\n",
    );
    write("assets/table.txt", "1 2 3\n");
    write("shared/heavy/Cargo.toml", "[package]\nname = \"heavy\"\n");
    write("shared/heavy/src/lib.rs", "\n");
    tmp
}

#[test]
fn included_files_outside_the_crate_are_hashed() {
    let tmp = synthetic(false, "");
    let ws = tmp.path();
    let files = closure_sources(ws, "s");
    assert!(files.contains(&ws.join("assets/table.txt")), "{files:?}");
    let before = identity(ws, "s").unwrap();
    fs::write(ws.join("assets/table.txt"), "1 2 4\n").unwrap();
    assert_ne!(before, identity(ws, "s").unwrap());
}

#[test]
fn optional_dependencies_count_only_where_a_feature_enables_them() {
    // Off: the stage asks for no feature, and the workspace turns lib's defaults off.
    let tmp = synthetic(false, "\"big\"");
    let ws = tmp.path();
    let heavy = ws.join("shared/heavy");
    assert!(!closure_sources(ws, "s")
        .iter()
        .any(|f| f.starts_with(&heavy)));
    let before = identity(ws, "s").unwrap();
    fs::write(heavy.join("src/lib.rs"), "// edited\n").unwrap();
    assert_eq!(before, identity(ws, "s").unwrap());
    // On: the stage asks for `big`.
    let tmp = synthetic(true, "");
    let ws = tmp.path();
    let heavy = ws.join("shared/heavy");
    assert!(closure_sources(ws, "s")
        .iter()
        .any(|f| f.starts_with(&heavy)));
    let before = identity(ws, "s").unwrap();
    fs::write(heavy.join("src/lib.rs"), "// edited\n").unwrap();
    assert_ne!(before, identity(ws, "s").unwrap());
}

#[test]
fn unknown_packages_are_refused() {
    let err = identity(&real_workspace(), "no-such-stage").unwrap_err();
    assert!(
        err.to_string().contains("not a crate of this workspace"),
        "{err}"
    );
}
