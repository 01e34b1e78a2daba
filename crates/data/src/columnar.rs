//! Columnar datasets: Parquet files and Arrow IPC streams, the formats dataset hubs publish.
//! Only the named text column is decoded.

use arrow_array::{Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use base::{Error, Result};
use std::path::Path;

/// Calls `f(row, text)` for every row of column `field` in a Parquet file. Null values are
/// skipped (they count as rows).
pub fn read_parquet(path: &Path, field: &str, f: impl FnMut(usize, &str)) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("not a readable Parquet file: {e}"),
                "re-download the file",
            )
        })?;
    each_row(path, field, reader.map(|b| b.map_err(|e| e.to_string())), f)
}

type StreamReader = arrow_ipc::reader::StreamReader<std::io::BufReader<std::fs::File>>;

fn open_stream(path: &Path) -> Result<StreamReader> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    StreamReader::try_new(std::io::BufReader::new(file), None).map_err(|e| {
        Error::input(
            path.display().to_string(),
            format!("not an Arrow IPC stream: {e}"),
            "pass an Arrow stream (not the file/Feather format), or re-fetch the file",
        )
    })
}

/// Calls `f(row, text)` for every row of column `field` in an Arrow IPC stream file.
pub fn read_arrow_stream(path: &Path, field: &str, f: impl FnMut(usize, &str)) -> Result<()> {
    let reader = open_stream(path)?;
    each_row(path, field, reader.map(|b| b.map_err(|e| e.to_string())), f)
}

/// Every row of an Arrow IPC stream file as a JSON object (column name to value): strings,
/// integers, floats, booleans, lists and structs, nested as deep as they go; nulls are null.
/// Benchmark datasets are small, so reading them whole is fine.
pub fn read_arrow_rows(path: &Path) -> Result<Vec<serde_json::Value>> {
    let reader = open_stream(path)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| {
            Error::input(
                format!("{}, after row {}", path.display(), rows.len()),
                format!("unreadable batch: {e}"),
                "the file is truncated or corrupt; re-fetch it",
            )
        })?;
        let schema = batch.schema();
        let start = rows.len();
        rows.resize_with(start + batch.num_rows(), || {
            serde_json::Value::Object(Default::default())
        });
        for (field, col) in schema.fields().iter().zip(batch.columns()) {
            for (i, row) in rows[start..].iter_mut().enumerate() {
                let v = json_value(col.as_ref(), i).map_err(|e| {
                    Error::input(
                        format!("{}, column {:?}", path.display(), field.name()),
                        e,
                        "this column type is not supported; convert the dataset to JSONL",
                    )
                })?;
                row[field.name()] = v;
            }
        }
    }
    Ok(rows)
}

/// Element i of an Arrow array as JSON.
fn json_value(a: &dyn Array, i: usize) -> std::result::Result<serde_json::Value, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType as T;
    use serde_json::Value;
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        T::Utf8 => a.as_string::<i32>().value(i).into(),
        T::LargeUtf8 => a.as_string::<i64>().value(i).into(),
        T::Utf8View => a.as_string_view().value(i).into(),
        T::Boolean => a.as_boolean().value(i).into(),
        T::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        T::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        T::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        T::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        T::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        T::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        T::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        T::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        T::Float32 => (a.as_primitive::<Float32Type>().value(i) as f64).into(),
        T::Float64 => a.as_primitive::<Float64Type>().value(i).into(),
        T::List(_) => list(a.as_list::<i32>().value(i).as_ref())?,
        T::LargeList(_) => list(a.as_list::<i64>().value(i).as_ref())?,
        T::Struct(fields) => {
            let s = a.as_struct();
            let mut o = serde_json::Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                o.insert(f.name().clone(), json_value(col.as_ref(), i)?);
            }
            Value::Object(o)
        }
        other => return Err(format!("unsupported type {other}")),
    })
}

fn list(items: &dyn Array) -> std::result::Result<serde_json::Value, String> {
    (0..items.len())
        .map(|j| json_value(items, j))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(serde_json::Value::Array)
}

fn each_row(
    path: &Path,
    field: &str,
    batches: impl Iterator<Item = std::result::Result<RecordBatch, String>>,
    mut f: impl FnMut(usize, &str),
) -> Result<()> {
    let mut row = 0;
    for batch in batches {
        let batch = batch.map_err(|e| {
            Error::input(
                format!("{}, after row {row}", path.display()),
                format!("unreadable batch: {e}"),
                "the file is truncated or corrupt; re-download it",
            )
        })?;
        let col = batch.column_by_name(field).ok_or_else(|| {
            let names: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            Error::input(
                path.display().to_string(),
                format!("no column {field:?} (columns: {names:?})"),
                "set the source's `field` to the text column",
            )
        })?;
        let mut emit = |i: usize, v: Option<&str>| {
            if let Some(s) = v {
                f(row + i, s);
            }
        };
        if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            a.iter().enumerate().for_each(|(i, v)| emit(i, v));
        } else if let Some(a) = col.as_any().downcast_ref::<LargeStringArray>() {
            a.iter().enumerate().for_each(|(i, v)| emit(i, v));
        } else if let Some(a) = col.as_any().downcast_ref::<StringViewArray>() {
            a.iter().enumerate().for_each(|(i, v)| emit(i, v));
        } else {
            return Err(Error::input(
                path.display().to_string(),
                format!(
                    "column {field:?} has type {}, not a string",
                    col.data_type()
                ),
                "point `field` at a text column",
            ));
        }
        row += batch.num_rows();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int32Array;
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let text = StringArray::from(vec![Some("first doc"), None, Some("third doc")]);
        let n = Int32Array::from(vec![1, 2, 3]);
        RecordBatch::try_from_iter(vec![
            ("text", Arc::new(text) as Arc<dyn Array>),
            ("n", Arc::new(n) as Arc<dyn Array>),
        ])
        .unwrap()
    }

    #[test]
    fn reads_parquet_and_arrow_streams_and_names_missing_columns() {
        let dir = std::env::temp_dir().join(format!("frugal-columnar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = batch();
        let pq = dir.join("d.parquet");
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&pq).unwrap(),
            b.schema(),
            None,
        )
        .unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let arrow = dir.join("d.arrow");
        let mut w = arrow_ipc::writer::StreamWriter::try_new(
            std::fs::File::create(&arrow).unwrap(),
            &b.schema(),
        )
        .unwrap();
        w.write(&b).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();

        let mut rows = vec![];
        read_parquet(&pq, "text", |i, s| rows.push((i, s.to_string()))).unwrap();
        assert_eq!(
            rows,
            [(0, "first doc".to_string()), (2, "third doc".to_string())]
        );
        rows.clear();
        read_arrow_stream(&arrow, "text", |i, s| rows.push((i, s.to_string()))).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 2, 3, 5]);

        let e = read_parquet(&pq, "body", |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column \"body\"") && e.contains("\"text\"") && e.contains("d.parquet"),
            "{e}"
        );
        let e = read_arrow_stream(&arrow, "n", |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a string"), "{e}");
        let bytes = std::fs::read(&arrow).unwrap();
        std::fs::write(dir.join("cut.arrow"), &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_arrow_stream(&dir.join("cut.arrow"), "text", |_, _| {}).is_err());
        std::fs::write(dir.join("junk.parquet"), b"PAR1 nope").unwrap();
        assert!(read_parquet(&dir.join("junk.parquet"), "text", |_, _| {}).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
