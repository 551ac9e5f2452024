//! Renders the document tree as GitHub-flavoured Markdown (report.md, the README of a submission).
//! Figures are image links to `plots/*.svg`, written beside it.

use crate::doc::{Block, Doc, Inline, Line};

pub fn render(doc: &Doc) -> String {
    let mut out = format!("# {}\n", escape(&doc.title));
    for block in &doc.blocks {
        out.push('\n');
        match block {
            Block::Heading(level, text) => out.push_str(&format!(
                "{} {}\n",
                "#".repeat(*level as usize),
                escape(text)
            )),
            Block::Para(line) => out.push_str(&format!("{}\n", inline(line))),
            Block::List(items) => items
                .iter()
                .for_each(|i| out.push_str(&format!("- {}\n", inline(i)))),
            Block::Table { head, rows } => {
                out.push_str(&format!(
                    "| {} |\n",
                    head.iter()
                        .map(|h| cell(&Line::text(h.clone())))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
                out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                for row in rows {
                    out.push_str(&format!(
                        "| {} |\n",
                        row.iter().map(cell).collect::<Vec<_>>().join(" | ")
                    ));
                }
            }
            Block::Figure(f) => {
                out.push_str(&format!("![{}]({})\n\n", escape(&f.title), f.file()));
                out.push_str(&format!("*{}*\n", inline(&f.caption)));
            }
        }
    }
    out
}

fn inline(line: &Line) -> String {
    line.0
        .iter()
        .map(|i| match i {
            Inline::Text(t) => escape(t),
            Inline::Strong(t) => format!("**{}**", escape(t)),
            Inline::Code(t) => format!("`{}`", t.replace('`', "'")),
            Inline::Link { text, href } => {
                format!("[{}]({})", escape(text), href.replace(' ', "%20"))
            }
        })
        .collect()
}

/// A table cell: no newlines, and `|` must not end the cell.
fn cell(line: &Line) -> String {
    inline(line).replace('\n', " ").replace('|', "\\|")
}

/// Escapes what would turn plain text into markup, and nothing else, so the raw file stays
/// readable: `_` only at a word boundary (GFM ignores intraword underscores), `<` only where it
/// could open a tag, `#` and `>` only at the start.
fn escape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let word = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let needs = match c {
            '\\' | '*' | '`' | '[' | ']' => true,
            '_' => !(word(i.checked_sub(1)) && word(Some(i + 1))),
            '<' => chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, '/' | '!' | '?')),
            '#' | '>' => i == 0,
            _ => false,
        };
        if needs {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Figure;

    #[test]
    fn renders_tables_links_and_figures_with_escaping() {
        let mut doc = Doc {
            title: "A_b".into(),
            blocks: vec![],
        };
        doc.heading(2, "Results");
        doc.table(
            &["run", "bpb"],
            vec![vec![
                Line::text("a|b"),
                Line::default().push_link("1.2 *x*", "../../t/k/manifest.json"),
            ]],
        );
        doc.figure(Figure {
            id: "f".into(),
            title: "T".into(),
            svg: "<svg/>".into(),
            caption: Line::text("from run k"),
            sources: vec![],
        });
        let md = render(&doc);
        assert!(md.starts_with("# A_b\n"), "{md}");
        assert_eq!(
            escape("p<0.01 and <b> _x_ a_b #1 # *"),
            "p<0.01 and \\<b> \\_x\\_ a_b #1 # \\*"
        );
        assert_eq!(escape("# x > y"), "\\# x > y");
        assert!(md.contains("## Results\n"), "{md}");
        assert!(
            md.contains(
                "| run | bpb |\n|---|---|\n| a\\|b | [1.2 \\*x\\*](../../t/k/manifest.json) |\n"
            ),
            "{md}"
        );
        assert!(md.contains("![T](plots/f.svg)\n\n*from run k*\n"), "{md}");
    }
}
