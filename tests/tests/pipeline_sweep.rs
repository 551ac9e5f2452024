//! `--set node.param=v1,v2,...` sweeps: one run per value of the node and of everything
//! downstream, upstream runs shared, and a table of the results.

use pgolf_e2e::project::{status_of, TestProject, CHAIN};

fn chain() -> TestProject {
    let p = TestProject::new(CHAIN);
    p.write("data/a.txt", "alpha");
    p
}

fn lines_starting<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn a_sweep_runs_each_value_downstream_and_upstream_once() {
    let p = chain();
    let out = p.ok(&["run", "--set", "middle.value=1,2,3"]);
    assert_eq!(status_of(&out, "source"), "ran", "{out}");
    assert_eq!(lines_starting(&out, "source").len(), 1, "{out}");
    assert_eq!(
        lines_starting(&out, "middle[middle.value=").len(),
        3,
        "{out}"
    );
    assert_eq!(lines_starting(&out, "last[middle.value=").len(), 3, "{out}");
    assert!(
        lines_starting(&out, "middle[")
            .iter()
            .all(|l| l.contains(" ran ")),
        "{out}"
    );
    assert_eq!(p.runs("echo-stage").len(), 7);

    // The table: one row per value, with the swept node's and the final node's figures.
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 2 + 3, "{out}");
    assert!(
        table[0].contains("middle.value")
            && table[0].contains("middle:double")
            && table[0].contains("last:double"),
        "{out}"
    );
    let row = |v: &str| {
        table
            .iter()
            .find(|r| r.split('|').nth(1).map(str::trim) == Some(v))
            .copied()
            .unwrap()
    };
    assert!(row("3").contains("6.0000"), "{out}");

    // The same sweep again reuses everything; a wider one runs only the new value.
    let again = p.ok(&["run", "--set", "middle.value=1,2,3"]);
    assert!(!again.contains(" ran "), "{again}");
    let wider = p.ok(&["run", "--set", "middle.value=1,2,3,4"]);
    assert_eq!(
        wider.lines().filter(|l| l.contains(" ran ")).count(),
        2,
        "{wider}"
    );
}

#[test]
fn several_sets_form_the_cartesian_product() {
    let p = chain();
    let out = p.ok(&[
        "run",
        "--set",
        "middle.value=1,2",
        "--set",
        "last.text=x,y,z",
    ]);
    assert_eq!(lines_starting(&out, "middle[").len(), 2, "{out}");
    assert_eq!(lines_starting(&out, "last[").len(), 6, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with('|')).count(),
        2 + 6,
        "{out}"
    );
}

#[test]
fn a_gather_input_collects_every_variant() {
    let yaml =
        format!("{CHAIN}  report:\n    exe: echo-stage\n    inputs: {{all: {{gather: last}}}}\n");
    let p = TestProject::new(&yaml);
    p.write("data/a.txt", "alpha");
    let out = p.ok(&["run", "--set", "middle.value=7,8"]);
    assert_eq!(lines_starting(&out, "report").len(), 1, "{out}");
    let text = std::fs::read_to_string(p.run_dir_of(&out, "echo-stage", "report").join("out.txt"))
        .unwrap();
    assert_eq!(text.matches("input all:").count(), 2, "{text}");
    assert!(
        text.contains("\"value\":7") && text.contains("\"value\":8"),
        "{text}"
    );
}
