//! The `send` command's input (SPEC §16): NDJSON (one event or envelope per
//! line) or one JSON array, read on a thread of its own and handed over one
//! record at a time through a bounded channel, so memory follows what is in
//! flight, not the size of the file.

use std::io::{BufRead, BufReader, Read};

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;

/// One input record: its 1-based line (for an array, the index + 1) and its
/// JSON, or why it is not JSON.
#[derive(Debug)]
pub struct Item {
    pub line: u64,
    pub value: Result<Value, String>,
}

/// Reads `input` on a thread of its own; the items arrive in order on the
/// returned channel, which closes at the end of the input (or when the
/// receiver is dropped, which stops the reading).
pub fn spawn_reader(input: Box<dyn Read + Send>, capacity: usize) -> mpsc::Receiver<Item> {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    std::thread::Builder::new()
        .name("send-input".into())
        .spawn(move || read(input, &mut |item| sender.blocking_send(item).is_ok()))
        .expect("a thread can be started");
    receiver
}

/// Reads every item of `input`, handing each to `emit` (which answers whether to go on).
pub fn read(input: impl Read, emit: &mut dyn FnMut(Item) -> bool) {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let array = match is_array(&mut reader) {
        Ok(array) => array,
        Err(error) => {
            emit(Item { line: 1, value: Err(format!("cannot read the input: {error}")) });
            return;
        }
    };
    if array {
        read_array(reader, emit)
    } else {
        read_lines(reader, emit)
    }
}

/// Whether the input is one JSON array: its first byte that is not white
/// space (in the first buffer; one full of white space is NDJSON) is `[`.
fn is_array(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let buffer = reader.fill_buf()?;
    Ok(buffer.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'['))
}

/// NDJSON: blank lines are skipped but counted; a line that is not JSON is an item with its reason.
fn read_lines(mut reader: impl BufRead, emit: &mut dyn FnMut(Item) -> bool) {
    let mut buffer = Vec::new();
    let mut line = 0u64;
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                emit(Item { line: line + 1, value: Err(format!("cannot read the input: {error}")) });
                return;
            }
        }
        line += 1;
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = serde_json::from_slice::<Value>(&buffer).map_err(|e| format!("line {line} is not JSON: {e}"));
        if !emit(Item { line, value }) {
            return;
        }
    }
}

/// One JSON array, element by element. A syntax error ends the input: it is
/// one last item (nothing after it can be found).
fn read_array(reader: impl Read, emit: &mut dyn FnMut(Item) -> bool) {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let (mut count, mut stopped) = (0u64, false);
    let result = (&mut deserializer).deserialize_seq(Elements { emit: &mut *emit, count: &mut count, stopped: &mut stopped });
    if stopped {
        return;
    }
    if let Err(error) = result.and_then(|()| deserializer.end()) {
        emit(Item { line: count + 1, value: Err(format!("the JSON array is broken after element {count}: {error}")) });
    }
}

struct Elements<'a> {
    emit: &'a mut dyn FnMut(Item) -> bool,
    count: &'a mut u64,
    stopped: &'a mut bool,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            *self.count += 1;
            if !(self.emit)(Item { line: *self.count, value: Ok(value) }) {
                *self.stopped = true;
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<(u64, Result<Value, String>)> {
        let mut out = Vec::new();
        read(text.as_bytes(), &mut |item| {
            out.push((item.line, item.value));
            true
        });
        out
    }

    #[test]
    fn ndjson_lines_are_numbered_from_one_and_blank_lines_counted() {
        let got = items("{\"a\":1}\n\n  \n{\"a\":2}\nnot json\n{\"a\":3}");
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 4, 5, 6]);
        assert_eq!(got[1].1.as_ref().unwrap()["a"], 2);
        assert!(got[2].1.as_ref().unwrap_err().starts_with("line 5 is not JSON"));
        assert_eq!(got[3].1.as_ref().unwrap()["a"], 3, "a last line without a newline");
    }

    #[test]
    fn leading_blank_lines_count_too() {
        let lines: Vec<u64> = items("\n\n{\"a\":1}\n").iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3]);
    }

    #[test]
    fn an_array_is_numbered_by_index_plus_one() {
        let got = items("  [ {\"a\":1}, 7, {\"a\":3} ]\n");
        assert_eq!(got.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(got[1].1.as_ref().unwrap(), &Value::from(7));
    }

    #[test]
    fn a_broken_array_ends_with_one_invalid_item() {
        let got = items("[{\"a\":1}, {\"a\": ]");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, 2);
        assert!(got[1].1.as_ref().unwrap_err().contains("broken after element 1"));
        assert!(items("").is_empty());
    }

    #[test]
    fn a_stopped_reader_stops() {
        let mut seen = 0;
        read("{}\n{}\n{}\n".as_bytes(), &mut |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 1);
        let mut seen = 0;
        read("[{}, {}, {}]".as_bytes(), &mut |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 1);
    }
}
