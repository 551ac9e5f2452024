//! Renders the document tree as one self-contained HTML page: the stylesheet and every plot (SVG)
//! are inline, so the page opens anywhere, offline, with nothing beside it. Links to the stage runs'
//! manifests are relative (they resolve inside the `out/` store).

use crate::doc::{Block, Doc, Inline, Line};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;max-width:1180px;margin:2em auto;\
padding:0 1em;color:#1b1f24;line-height:1.45}h1{font-size:1.7em;border-bottom:2px solid #d0d7de;padding-bottom:.2em}\
h2{margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.15em}table{border-collapse:collapse;margin:.6em 0;\
font-size:.92em}th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f6f8fa}\
tr:nth-child(even) td{background:#fbfcfd}code{background:#f0f2f4;padding:0 .25em;border-radius:3px;font-size:.92em}\
figure{margin:1.2em 0}figure svg{max-width:100%;height:auto;border:1px solid #eaeef2}figcaption{font-size:.9em;color:#57606a}\
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}";

pub fn render(doc: &Doc) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!(
        "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&doc.title)
    ));
    out.push_str(&format!("<h1>{}</h1>\n", escape(&doc.title)));
    for block in &doc.blocks {
        match block {
            Block::Heading(level, text) => {
                let level = (*level).clamp(2, 6);
                out.push_str(&format!(
                    "<h{level} id=\"{}\">{}</h{level}>\n",
                    anchor(text),
                    escape(text)
                ));
            }
            Block::Para(line) => out.push_str(&format!("<p>{}</p>\n", inline(line))),
            Block::List(items) => {
                out.push_str("<ul>\n");
                items
                    .iter()
                    .for_each(|i| out.push_str(&format!("<li>{}</li>\n", inline(i))));
                out.push_str("</ul>\n");
            }
            Block::Table { head, rows } => {
                out.push_str("<table>\n<tr>");
                head.iter()
                    .for_each(|h| out.push_str(&format!("<th>{}</th>", escape(h))));
                out.push_str("</tr>\n");
                for row in rows {
                    out.push_str("<tr>");
                    row.iter()
                        .for_each(|c| out.push_str(&format!("<td>{}</td>", inline(c))));
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            Block::Figure(f) => {
                out.push_str(&format!(
                    "<figure id=\"{}\">\n{}\n",
                    escape(&f.id),
                    strip_xml_declaration(&f.svg)
                ));
                out.push_str(&format!(
                    "<figcaption>{}</figcaption>\n</figure>\n",
                    inline(&f.caption)
                ));
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn inline(line: &Line) -> String {
    line.0
        .iter()
        .map(|i| match i {
            Inline::Text(t) => escape(t),
            Inline::Strong(t) => format!("<strong>{}</strong>", escape(t)),
            Inline::Code(t) => format!("<code>{}</code>", escape(t)),
            Inline::Link { text, href } => {
                format!("<a href=\"{}\">{}</a>", escape(href), escape(text))
            }
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn anchor(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// An inline `<svg>` must not carry the `<?xml …?>` prolog a standalone SVG file has.
fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(at) => &svg[at..],
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Figure;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let mut doc = Doc {
            title: "a<b".into(),
            blocks: vec![],
        };
        doc.para(Line::text("x & y").push_link("k", "../../train/k/manifest.json"));
        doc.figure(Figure {
            id: "f".into(),
            title: "T".into(),
            svg: "<?xml version=\"1.0\"?>\n<svg width=\"1\"></svg>".into(),
            caption: Line::text("c"),
            sources: vec![],
        });
        let html = render(&doc);
        assert!(html.contains("<title>a&lt;b</title>"));
        assert!(html.contains("<p>x &amp; y<a href=\"../../train/k/manifest.json\">k</a></p>"));
        assert!(html.contains("<figure id=\"f\">\n<svg width=\"1\"></svg>"));
        assert!(!html.contains("<?xml"));
        assert!(
            !html.contains("src=\"http"),
            "nothing is fetched from outside"
        );
    }
}
