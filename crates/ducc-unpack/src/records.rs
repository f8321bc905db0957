//! PAX and GNU records: what an entry's extension records say beyond its header (xattrs,
//! times, a sparse layout), and the reader that puts a sparse file's holes back.

use std::io::{self, Read};

use crate::entry::{Entry, Timestamp, Xattr};
use crate::error::Error;
use crate::read::invalid;

/// Most sparse segments accepted for one file (a bound on memory for hostile maps).
const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// What an entry's PAX records say beyond its header: xattrs, a precise mtime, a sparse layout.
#[derive(Default)]
pub(crate) struct PaxRecords {
    /// `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*` records, in archive order (a LIBARCHIVE record
    /// for a name already given is dropped).
    pub(crate) xattrs: Vec<Xattr>,
    /// The last `mtime` record.
    pub(crate) mtime: Option<Timestamp>,
    sparse: SparseRecords,
}

/// The `GNU.sparse.*` records of an entry (formats 0.0, 0.1 and 1.0).
#[derive(Default)]
struct SparseRecords {
    major: Option<u64>,
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    map: Option<Vec<u8>>,
    /// `GNU.sparse.offset` / `GNU.sparse.numbytes` values in order (format 0.0).
    pairs: Vec<u64>,
}

impl PaxRecords {
    /// Reads the PAX records that precede `tar_entry`; `raw_name` names it in errors.
    pub(crate) fn read<R: Read>(
        tar_entry: &mut tar::Entry<'_, R>,
        layer: &str,
        raw_name: &[u8],
    ) -> Result<Self, Error> {
        let tar_err = |source| Error::Tar {
            layer: layer.to_owned(),
            source,
        };
        let mut records = PaxRecords::default();
        let Some(extensions) = tar_entry.pax_extensions().map_err(tar_err)? else {
            return Ok(records);
        };
        for extension in extensions {
            let extension = extension.map_err(tar_err)?;
            records.take(
                extension.key_bytes(),
                extension.value_bytes(),
                layer,
                raw_name,
            )?;
        }
        Ok(records)
    }

    /// Takes one record.
    fn take(
        &mut self,
        key: &[u8],
        value: &[u8],
        layer: &str,
        raw_name: &[u8],
    ) -> Result<(), Error> {
        let sparse = &mut self.sparse;
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            self.xattrs.push(Xattr {
                name: name.to_vec(),
                value: value.to_vec(),
            });
        } else if let Some(encoded) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
            // bsdtar: the name %-encoded, the value base64.
            let (Some(name), Some(value)) = (percent_decode(encoded), base64_decode(value)) else {
                return Err(invalid(layer, raw_name, "bad LIBARCHIVE.xattr record"));
            };
            if !self.xattrs.iter().any(|x| x.name == name) {
                self.xattrs.push(Xattr { name, value });
            }
        } else if key == b"mtime" {
            self.mtime = Some(
                parse_pax_time(value).ok_or_else(|| invalid(layer, raw_name, "bad PAX mtime"))?,
            );
        } else if key == b"GNU.sparse.major" {
            sparse.major = parse_decimal(value);
        } else if key == b"GNU.sparse.name" {
            sparse.name = Some(value.to_vec());
        } else if key == b"GNU.sparse.realsize" || key == b"GNU.sparse.size" {
            sparse.real_size = parse_decimal(value);
        } else if key == b"GNU.sparse.map" {
            sparse.map = Some(value.to_vec());
        } else if key == b"GNU.sparse.offset" || key == b"GNU.sparse.numbytes" {
            if sparse.pairs.len() >= 2 * MAX_SPARSE_SEGMENTS {
                return Err(invalid(layer, raw_name, "too many sparse segments"));
            }
            sparse.pairs.push(
                parse_decimal(value)
                    .ok_or_else(|| invalid(layer, raw_name, "bad sparse segment"))?,
            );
        }
        Ok(())
    }

    /// The sparse layout the records describe, if they describe one. A sparse file's real name
    /// is its `GNU.sparse.name` record: `raw_name` becomes that name.
    pub(crate) fn sparse_layout(
        self,
        layer: &str,
        raw_name: &mut Vec<u8>,
    ) -> Result<Option<SparseLayout>, Error> {
        let sparse = self.sparse;
        if sparse.real_size.is_none() && sparse.major.is_none() && sparse.map.is_none() {
            return Ok(None);
        }
        let Some(real_size) = sparse.real_size else {
            return Err(invalid(
                layer,
                raw_name,
                "PAX sparse file without its real size",
            ));
        };
        if let Some(name) = sparse.name {
            *raw_name = name;
        }
        let segments = if sparse.major == Some(1) {
            // Format 1.0: the map precedes the data.
            None
        } else {
            let numbers = match sparse.map {
                Some(map) => {
                    let mut numbers = Vec::new();
                    for part in map.split(|&b| b == b',').filter(|p| !p.is_empty()) {
                        if numbers.len() >= 2 * MAX_SPARSE_SEGMENTS {
                            return Err(invalid(layer, raw_name, "too many sparse segments"));
                        }
                        numbers.push(
                            parse_decimal(part)
                                .ok_or_else(|| invalid(layer, raw_name, "bad sparse map"))?,
                        );
                    }
                    numbers
                }
                None => sparse.pairs,
            };
            if numbers.len() % 2 != 0 {
                return Err(invalid(layer, raw_name, "odd number of sparse map values"));
            }
            Some(numbers.chunks(2).map(|p| (p[0], p[1])).collect())
        };
        Ok(Some(SparseLayout {
            segments,
            real_size,
        }))
    }
}

pub(crate) fn parse_decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Parses a PAX time (`123`, `123.456`, `-1.5`).
fn parse_pax_time(value: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, digit) in fraction.bytes().take(9).enumerate() {
        nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
    }
    if !negative {
        return Some(Timestamp { secs, nanos });
    }
    // -1.5 is 1.5 s before the epoch: secs -2, nanos 500_000_000.
    if nanos == 0 {
        Some(Timestamp { secs: -secs, nanos })
    } else {
        Some(Timestamp {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        })
    }
}

fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = std::str::from_utf8(text.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64, padded or not (libarchive writes xattr values without padding).
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let end = text.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&text[..end])
        .ok()
}

/// How a PAX sparse file's data is laid out.
pub(crate) struct SparseLayout {
    /// (offset, length) pairs, or `None` when the map precedes the data (format 1.0).
    segments: Option<Vec<(u64, u64)>>,
    /// The file's size with its holes.
    pub(crate) real_size: u64,
}

/// Reconstructs a PAX sparse file's logical content (holes read as zeros).
pub(crate) struct SparseReader<'a> {
    inner: &'a mut dyn Read,
    segments: Vec<(u64, u64)>,
    index: usize,
    pos: u64,
    real_size: u64,
}

impl<'a> SparseReader<'a> {
    pub(crate) fn new(
        inner: &'a mut dyn Read,
        layout: SparseLayout,
        layer: &str,
        entry: &Entry,
    ) -> Result<Self, Error> {
        let bad = |reason: &str| invalid(layer, &entry.raw_name, reason);
        let segments = match layout.segments {
            Some(s) => s,
            None => {
                // Format 1.0: decimal numbers, one a line, then padding to 512 bytes.
                let mut consumed = 0u64;
                let mut read_number = |consumed: &mut u64| -> Result<u64, Error> {
                    let mut digits = Vec::new();
                    loop {
                        let mut byte = [0u8; 1];
                        inner
                            .read_exact(&mut byte)
                            .map_err(|_| bad("truncated sparse map"))?;
                        *consumed += 1;
                        if byte[0] == b'\n' {
                            break;
                        }
                        if digits.len() > 20 {
                            return Err(bad("bad sparse map"));
                        }
                        digits.push(byte[0]);
                    }
                    parse_decimal(&digits).ok_or_else(|| bad("bad sparse map"))
                };
                let count = read_number(&mut consumed)?;
                if count > MAX_SPARSE_SEGMENTS as u64 {
                    return Err(bad("too many sparse segments"));
                }
                let mut segments = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let offset = read_number(&mut consumed)?;
                    let length = read_number(&mut consumed)?;
                    segments.push((offset, length));
                }
                let padding = (512 - consumed % 512) % 512;
                io::copy(&mut (&mut *inner).take(padding), &mut io::sink())
                    .map_err(|_| bad("truncated sparse map"))?;
                segments
            }
        };
        let mut end = 0u64;
        for &(offset, length) in &segments {
            let segment_end = offset
                .checked_add(length)
                .ok_or_else(|| bad("bad sparse map"))?;
            if offset < end || segment_end > layout.real_size {
                return Err(bad("overlapping or out-of-range sparse segments"));
            }
            end = segment_end;
        }
        Ok(SparseReader {
            inner,
            segments,
            index: 0,
            pos: 0,
            real_size: layout.real_size,
        })
    }
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.index < self.segments.len() {
            let (offset, length) = self.segments[self.index];
            if self.pos < offset {
                let n = buf
                    .len()
                    .min(usize::try_from(offset - self.pos).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            let end = offset + length;
            if self.pos < end {
                let want = buf
                    .len()
                    .min(usize::try_from(end - self.pos).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse file data ends early",
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.index += 1;
        }
        if self.pos < self.real_size {
            let n = buf
                .len()
                .min(usize::try_from(self.real_size - self.pos).unwrap_or(usize::MAX));
            buf[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        type Case<'a> = (&'a [u8], Option<(i64, u32)>);
        let cases: &[Case] = &[
            (b"0", Some((0, 0))),
            (b"12.5", Some((12, 500_000_000))),
            (b"-1.5", Some((-2, 500_000_000))),
            (b"-3", Some((-3, 0))),
            (b"1.1234567891", Some((1, 123_456_789))),
            (b"x", None),
            (b"1.x", None),
            (b"", None),
        ];
        for (raw, expected) in cases {
            let got = parse_pax_time(raw).map(|t| (t.secs, t.nanos));
            assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(raw));
        }
    }
}
