//! Input lines read within a bound: a line longer than the largest message
//! that could be sent is refused as it is read, and the rest of it skipped
//! up to its newline without being kept. Reading it whole first would let
//! one line without a newline (a file piped in by mistake) take as much
//! memory as it is long.

use std::io::{self, BufRead};

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line is in the buffer, its newline included if it had one.
    Whole,
    /// The line was longer than the bound: it was skipped, `bytes` long in
    /// all, and the buffer is empty.
    TooLong { bytes: u64 },
    /// Input ended before another line.
    End,
}

/// Reads the next line into `line` (cleared first), keeping at most `max`
/// bytes of it.
pub fn read_bounded(input: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    let mut skipped: Option<u64> = None;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match skipped {
                Some(bytes) => Line::TooLong { bytes },
                None if line.is_empty() => Line::End,
                None => Line::Whole,
            });
        }
        let newline = memchr(buf);
        let take = newline.map_or(buf.len(), |at| at + 1);
        match skipped.as_mut() {
            Some(bytes) => *bytes += take as u64,
            None if line.len() + take > max => {
                skipped = Some((line.len() + take) as u64);
                // What was kept is let go now, not when the line ends.
                *line = Vec::new();
            }
            None => line.extend_from_slice(&buf[..take]),
        }
        input.consume(take);
        if newline.is_some() {
            return Ok(match skipped {
                Some(bytes) => Line::TooLong { bytes },
                None => Line::Whole,
            });
        }
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        // A tiny buffer, so lines span many reads.
        let mut r = io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            match read_bounded(&mut r, &mut line, max).unwrap() {
                Line::End => return out,
                got => out.push((got, line.clone())),
            }
        }
    }

    #[test]
    fn lines_within_the_bound_come_whole() {
        assert_eq!(
            all(b"ab\ncd\nlast", 8),
            [
                (Line::Whole, b"ab\n".to_vec()),
                (Line::Whole, b"cd\n".to_vec()),
                (Line::Whole, b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn a_longer_line_is_skipped_to_its_newline() {
        assert_eq!(
            all(b"0123456789\nok\n0123456789", 5),
            [
                (Line::TooLong { bytes: 11 }, vec![]),
                (Line::Whole, b"ok\n".to_vec()),
                (Line::TooLong { bytes: 10 }, vec![]),
            ]
        );
        // The newline counts: a line of exactly `max` with it is whole.
        assert_eq!(all(b"abcd\n", 5), [(Line::Whole, b"abcd\n".to_vec())]);
    }
}
