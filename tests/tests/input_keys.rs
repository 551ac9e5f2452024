//! The key a stage computes for its inputs is the key `pipeline` predicted for them: both call
//! `pgolf_store::input_key`, and this test holds them to it for every kind of input (one raw file,
//! a list with a glob, a raw folder, stage outputs, and a stage output given as a path), by
//! running the stage by hand with the same inputs and params and comparing run keys.

use pgolf_e2e::project::{TestProject, CHAIN};
use pgolf_store::{files, Manifest};
use std::path::{Path, PathBuf};

const YAML: &str = "\
stages:
  one:
    exe: echo-stage
    inputs: {text: {file: data/a.txt}}
    params: {text: one}
  many:
    exe: echo-stage
    inputs: {texts: {files: [data/a.txt, 'data/parts/*.txt']}, folder: {file: data/parts}}
    params: {text: many}
  both:
    exe: echo-stage
    inputs: {a: one, b: many}
    params: {text: both, value: 2}
";

fn manifest(dir: &Path) -> Manifest {
    Manifest::read(dir).unwrap()
}

/// Runs echo-stage by hand with `inputs` (NAME, PATH in order) and `params`; its manifest.
fn by_hand(p: &TestProject, name: &str, inputs: &[(String, PathBuf)], params: &str) -> Manifest {
    let params_file = p.path().join(format!("{name}.json"));
    std::fs::write(&params_file, params).unwrap();
    let out = p.path().join("by-hand").join(name);
    let mut args = vec![
        "--out".to_string(),
        out.display().to_string(),
        "--params".into(),
        params_file.display().to_string(),
    ];
    for (input, path) in inputs {
        args.push("--in".into());
        args.push(format!("{input}={}", path.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = pgolf_e2e::run("echo-stage", &args, p.path());
    assert!(run.status.success(), "{}", pgolf_e2e::stderr(&run));
    manifest(&out)
}

/// The (name, path) arguments that reproduce a manifest's inputs: raw paths as recorded, stage
/// outputs by their directory in the store.
fn inputs_of(p: &TestProject, m: &Manifest) -> Vec<(String, PathBuf)> {
    let mut args = Vec::new();
    for (name, input) in &m.inputs {
        match &input.stage {
            Some(stage) => args.push((name.clone(), p.out().join(stage).join(&input.key))),
            None => args.extend(input.paths.iter().map(|q| (name.clone(), q.into()))),
        }
    }
    args
}

#[test]
fn a_stage_keys_its_inputs_as_the_driver_predicted() {
    let p = TestProject::new(YAML);
    p.write("data/a.txt", "alpha");
    p.write("data/parts/1.txt", "one");
    p.write("data/parts/2.txt", "two");
    let out = p.ok(&["run"]);

    for (label, params) in [
        ("one", r#"{"text":"one"}"#),
        ("many", r#"{"text":"many"}"#),
        ("both", r#"{"text":"both","value":2}"#),
    ] {
        let dir = p.run_dir_of(&out, "echo-stage", label);
        let m = manifest(&dir);
        // Stored under the key the driver computed, and the stage wrote that same key.
        assert_eq!(dir.file_name().unwrap().to_str(), Some(m.key.as_str()));
        for (name, input) in &m.inputs {
            if input.stage.is_none() {
                let paths: Vec<PathBuf> = input.paths.iter().map(PathBuf::from).collect();
                let key = pgolf_store::input_key(&paths, None).unwrap().key;
                assert_eq!(key, input.key, "{label}: input {name}");
            }
        }
        // The same stage, inputs and params run by hand give the same run key.
        let again = by_hand(&p, label, &inputs_of(&p, &m), params);
        assert_eq!(again.key, m.key, "{label}");
        assert_eq!(again.inputs, m.inputs, "{label}");
    }
    let many = manifest(&p.run_dir_of(&out, "echo-stage", "many"));
    assert!(
        many.inputs["texts"].key.starts_with("files:"),
        "{:?}",
        many.inputs
    );
    assert_eq!(many.inputs["texts"].paths.len(), 3);
    assert!(many.inputs["folder"].key.starts_with("file:"));
}

#[test]
fn a_stage_output_given_as_a_path_is_keyed_by_its_run_key() {
    let p = TestProject::new(CHAIN);
    p.write("data/a.txt", "alpha");
    let out = p.ok(&["run"]);
    let source = p.run_dir_of(&out, "echo-stage", "source");
    let rel = source.strip_prefix(p.path()).unwrap().display().to_string();
    p.write(
        "pipeline.yaml",
        &format!("stages:\n  reader:\n    exe: echo-stage\n    inputs: {{up: {{file: {rel}}}}}\n"),
    );
    let out = p.ok(&["run"]);
    let m = manifest(&p.run_dir_of(&out, "echo-stage", "reader"));
    assert_eq!(m.inputs["up"].key, manifest(&source).key);
    assert!(source.join(files::MANIFEST).is_file());
}
