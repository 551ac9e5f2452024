//! The report as a small document tree, built once and rendered twice (markdown.rs, html.rs), so
//! report.md and report.html cannot disagree on a single number.

/// A run of inline content.
#[derive(Clone, Debug, PartialEq)]
pub enum Inline {
    Text(String),
    Strong(String),
    Code(String),
    /// A relative link, e.g. to the manifest of the stage run a number came from.
    Link {
        text: String,
        href: String,
    },
}

/// A line of inline content (a paragraph, a list item or a table cell).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line(pub Vec<Inline>);

impl Line {
    pub fn text(s: impl Into<String>) -> Line {
        Line(vec![Inline::Text(s.into())])
    }

    pub fn push_text(mut self, s: impl Into<String>) -> Line {
        self.0.push(Inline::Text(s.into()));
        self
    }

    pub fn push_strong(mut self, s: impl Into<String>) -> Line {
        self.0.push(Inline::Strong(s.into()));
        self
    }

    pub fn push_code(mut self, s: impl Into<String>) -> Line {
        self.0.push(Inline::Code(s.into()));
        self
    }

    pub fn push_link(mut self, text: impl Into<String>, href: impl Into<String>) -> Line {
        self.0.push(Inline::Link {
            text: text.into(),
            href: href.into(),
        });
        self
    }

    pub fn append(mut self, other: Line) -> Line {
        self.0.extend(other.0);
        self
    }
}

impl From<&str> for Line {
    fn from(s: &str) -> Line {
        Line::text(s)
    }
}

impl From<String> for Line {
    fn from(s: String) -> Line {
        Line::text(s)
    }
}

/// A figure: an SVG written to `plots/<id>.svg` (linked from Markdown, inlined in HTML).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub id: String,
    pub title: String,
    pub svg: String,
    /// Says what is drawn and which stage runs the data came from (with links).
    pub caption: Line,
    /// The keys of those runs (for provenance.json).
    pub sources: Vec<String>,
}

impl Figure {
    pub fn file(&self) -> String {
        format!("plots/{}.svg", self.id)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Heading(u8, String),
    Para(Line),
    List(Vec<Line>),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<Line>>,
    },
    Figure(Figure),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Doc {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Doc {
    pub fn heading(&mut self, level: u8, text: impl Into<String>) {
        self.blocks.push(Block::Heading(level, text.into()));
    }

    pub fn para(&mut self, line: impl Into<Line>) {
        self.blocks.push(Block::Para(line.into()));
    }

    pub fn list(&mut self, items: Vec<Line>) {
        if !items.is_empty() {
            self.blocks.push(Block::List(items));
        }
    }

    pub fn table(&mut self, head: &[&str], rows: Vec<Vec<Line>>) {
        self.blocks.push(Block::Table {
            head: head.iter().map(|h| h.to_string()).collect(),
            rows,
        });
    }

    pub fn figure(&mut self, figure: Figure) {
        self.blocks.push(Block::Figure(figure));
    }

    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Figure(f) => Some(f),
            _ => None,
        })
    }
}
