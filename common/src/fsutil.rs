//! Reading small files with a size cap.
//!
//! Every file weft reads (the node subnet file, IPAM records, `net-conf.json`) is small
//! by contract. Reading one without a cap lets a misconfigured path (`/dev/zero`, a log
//! file, a FIFO fed forever) grow the process until the kernel kills it; with a cap the
//! caller gets an error that names the file and the limit instead.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Reads `path` as UTF-8 text of at most `max_bytes` bytes.
///
/// A drop-in for [`std::fs::read_to_string`] on files that are small by contract. It
/// reads at most `max_bytes + 1` bytes whatever the file is (regular file, device,
/// FIFO), so memory use is bounded by the cap. Errors:
/// * open/read failures are the OS error unchanged, like `std::fs::read_to_string`
///   (`NotFound` stays `NotFound`; callers add the path as they already do);
/// * larger than the cap: [`io::ErrorKind::FileTooLarge`], naming the path and the limit;
/// * not UTF-8: [`io::ErrorKind::InvalidData`], naming the path.
pub fn read_to_string_bounded(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max_bytes {
        return Err(too_large(path, max_bytes));
    }
    String::from_utf8(buf).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

fn too_large(path: &Path, max_bytes: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "{} is larger than {max_bytes} bytes, the limit for this file (wrong path?)",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_up_to_and_including_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_to_string_bounded(&path, 10).unwrap(), "0123456789");
        assert_eq!(
            read_to_string_bounded(&path, 1 << 20).unwrap(),
            "0123456789"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_an_error_naming_path_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, "01234567890").unwrap();
        let e = read_to_string_bounded(&path, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        let msg = e.to_string();
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains("10 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn an_endless_device_stops_at_the_limit() {
        let e = read_to_string_bounded(Path::new("/dev/zero"), 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert!(e.to_string().contains("/dev/zero"), "{e}");
    }

    #[test]
    fn a_missing_file_keeps_its_kind_and_a_binary_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_to_string_bounded(&dir.path().join("missing"), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe]).unwrap();
        let e = read_to_string_bounded(&bin, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("bin"), "{e}");
    }
}
