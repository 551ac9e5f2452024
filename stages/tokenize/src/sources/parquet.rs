//! Parquet documents (FineWeb's format): a `text` column, and an `id` column when there is one.
//! Read row group by row group through parquet's column readers, which hand back the raw bytes of
//! each value: the text is checked for UTF-8 here, so a bad value is reported with its row (the
//! Arrow reader would reject the whole batch without saying where).

use anyhow::{anyhow, bail, Context, Result};
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{get_typed_column_reader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Batches, RawDoc, BATCH_DOCS};

pub fn count_rows(path: &Path) -> Result<u64> {
    Ok(open(path)?.metadata().file_metadata().num_rows().max(0) as u64)
}

fn open(path: &Path) -> Result<SerializedFileReader<File>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))
}

pub fn batches(path: &Path) -> Result<Batches> {
    let reader = open(path)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let find = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
    };
    let text = find("text").ok_or_else(|| {
        let names: Vec<String> = schema.columns().iter().map(|c| c.path().string()).collect();
        anyhow!(
            "{}: no `text` column (columns: {})",
            path.display(),
            names.join(", ")
        )
    })?;
    if schema.column(text).max_rep_level() > 0 {
        bail!(
            "{}: column `text` is a list, expected one string per row",
            path.display()
        );
    }
    if schema.column(text).physical_type() != PhysicalType::BYTE_ARRAY {
        bail!(
            "{}: column `text` holds {}, not strings",
            path.display(),
            schema.column(text).physical_type()
        );
    }
    let id = find("id").filter(|&i| {
        schema.column(i).physical_type() == PhysicalType::BYTE_ARRAY
            && schema.column(i).max_rep_level() == 0
    });
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(Box::new(ParquetDocs {
        path: path.to_path_buf(),
        name,
        reader,
        text,
        id,
        row_group: 0,
        open: None,
        row: 0,
        failed: false,
    }))
}

/// Walks the file's row groups, reading `text` (and `id`) a batch of rows at a time.
struct ParquetDocs {
    path: PathBuf,
    name: String,
    reader: SerializedFileReader<File>,
    text: usize,
    id: Option<usize>,
    row_group: usize,
    open: Option<(Column, Option<Column>)>,
    /// Row (in the file) of the next document.
    row: usize,
    failed: bool,
}

impl Iterator for ParquetDocs {
    type Item = Result<Vec<RawDoc>>;

    fn next(&mut self) -> Option<Result<Vec<RawDoc>>> {
        if self.failed {
            return None;
        }
        let result = self.next_batch().transpose();
        self.failed = matches!(result, Some(Err(_)));
        result
    }
}

impl ParquetDocs {
    fn next_batch(&mut self) -> Result<Option<Vec<RawDoc>>> {
        loop {
            if self.open.is_none() {
                if self.row_group == self.reader.num_row_groups() {
                    return Ok(None);
                }
                let group = self.reader.get_row_group(self.row_group).with_context(|| {
                    format!("{}: row group {}", self.path.display(), self.row_group)
                })?;
                let text = Column::new(group.as_ref(), self.text)?;
                let id = self
                    .id
                    .map(|i| Column::new(group.as_ref(), i))
                    .transpose()?;
                self.open = Some((text, id));
                self.row_group += 1;
            }
            let (text, id) = self.open.as_mut().expect("opened above");
            let texts = text.read(BATCH_DOCS).with_context(|| {
                format!(
                    "{}: cannot decode `text` from row {}",
                    self.path.display(),
                    self.row
                )
            })?;
            if texts.is_empty() {
                self.open = None;
                continue;
            }
            let ids = match id {
                Some(id) => id.read(texts.len()).with_context(|| {
                    format!(
                        "{}: cannot decode `id` from row {}",
                        self.path.display(),
                        self.row
                    )
                })?,
                None => Vec::new(),
            };
            let mut docs = Vec::with_capacity(texts.len());
            for (i, value) in texts.into_iter().enumerate() {
                let row = self.row + i;
                let bytes = value
                    .ok_or_else(|| anyhow!("{}: row {row}: `text` is null", self.path.display()))?;
                let text = std::str::from_utf8(bytes.data()).map_err(|e| {
                    anyhow!(
                        "{}: row {row}: invalid UTF-8 in `text` at byte {}",
                        self.path.display(),
                        e.valid_up_to()
                    )
                })?;
                let id = match ids
                    .get(i)
                    .and_then(|v| v.as_ref())
                    .and_then(|v| std::str::from_utf8(v.data()).ok())
                {
                    Some(id) => id.to_string(),
                    None => format!("{}:{row}", self.name),
                };
                docs.push(RawDoc {
                    id,
                    text: text.to_string(),
                    source_bits: None,
                });
            }
            self.row += docs.len();
            return Ok(Some(docs));
        }
    }
}

/// One byte-array column of one row group; values come back as `None` where null.
struct Column {
    reader: ColumnReaderImpl<ByteArrayType>,
    max_def_level: i16,
    values: Vec<ByteArray>,
    def_levels: Vec<i16>,
}

impl Column {
    fn new(group: &dyn parquet::file::reader::RowGroupReader, index: usize) -> Result<Column> {
        let max_def_level = group
            .metadata()
            .column(index)
            .column_descr()
            .max_def_level();
        let reader = get_typed_column_reader::<ByteArrayType>(group.get_column_reader(index)?);
        Ok(Column {
            reader,
            max_def_level,
            values: Vec::new(),
            def_levels: Vec::new(),
        })
    }

    fn read(&mut self, rows: usize) -> Result<Vec<Option<ByteArray>>> {
        self.values.clear();
        self.def_levels.clear();
        let (records, _, _) =
            self.reader
                .read_records(rows, Some(&mut self.def_levels), None, &mut self.values)?;
        if self.max_def_level == 0 {
            return Ok(self.values.drain(..).map(Some).collect());
        }
        let mut values = self.values.drain(..);
        let out: Vec<Option<ByteArray>> = self.def_levels[..records]
            .iter()
            .map(|&d| {
                if d == self.max_def_level {
                    values.next()
                } else {
                    None
                }
            })
            .collect();
        Ok(out)
    }
}
