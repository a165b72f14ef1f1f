//! `weft-agent install-cni`: the init container's job, without a shell in the image.
//!
//! Copies the CNI plugin binary into the node's CNI bin directory and the conflist into
//! its CNI config directory. Each file is written under a temporary name in the target
//! directory, synced, then renamed over the old one, so the container runtime never
//! sees half a file, and replacing a plugin that is running at that moment is fine (a
//! rename does not touch the old inode; writing into it would fail with ETXTBSY).
//!
//! The binary goes first: once the conflist appears the runtime calls the plugin.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Flags of the `install-cni` subcommand. Defaults match the agent DaemonSet.
#[derive(Clone, Debug, clap::Args)]
pub struct InstallCniArgs {
    /// The CNI plugin binary inside the image.
    #[arg(long, default_value = "/weft")]
    pub bin_src: PathBuf,
    /// The node's CNI binary directory (host path mounted into the pod).
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The conflist from the weft-config ConfigMap.
    #[arg(long, default_value = "/etc/weft/10-weft.conflist")]
    pub conf_src: PathBuf,
    /// The node's CNI config directory (host path mounted into the pod).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
}

impl InstallCniArgs {
    pub fn run(&self) -> io::Result<()> {
        install(&self.bin_src, &self.bin_dir, &self.conf_src, &self.conf_dir)
    }
}

/// Installs `bin_src` as `bin_dir/<its file name>` (mode 0755) and then `conf_src` as
/// `conf_dir/<its file name>` (mode 0644), each atomically. A file whose content is
/// already the same is left alone. The conflist must be JSON; a file that is not is
/// refused before anything on the node changes. Errors name the file.
pub fn install(bin_src: &Path, bin_dir: &Path, conf_src: &Path, conf_dir: &Path) -> io::Result<()> {
    let binary = read(bin_src)?;
    let conflist = read(conf_src)?;
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&conflist) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not JSON: {e}", conf_src.display()),
        ));
    }
    let dest_bin = bin_dir.join(file_name(bin_src)?);
    let dest_conf = conf_dir.join(file_name(conf_src)?);
    replace_atomically(&dest_bin, &binary, 0o755)?;
    replace_atomically(&dest_conf, &conflist, 0o644)?;
    Ok(())
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    fs::read(path).map_err(|e| with_path(e, "read", path))
}

fn file_name(path: &Path) -> io::Result<&std::ffi::OsStr> {
    path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Writes `content` to `dest` through `.<name>.tmp` in the same directory: write, set
/// the mode, fsync, rename, fsync the directory. Skips identical files (a rewritten
/// conflist makes the runtime reload its CNI config for nothing).
fn replace_atomically(dest: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let dir = dest.parent().expect("dest is dir.join(name)");
    fs::create_dir_all(dir).map_err(|e| with_path(e, "create directory", dir))?;
    if let Ok(old) = fs::read(dest) {
        let old_mode = fs::metadata(dest).map(|m| m.permissions().mode() & 0o7777);
        if old == content && old_mode.ok() == Some(mode) {
            return Ok(());
        }
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(dest.file_name().expect("dest has a file name"));
    // ".tmp": the runtime only loads *.conf, *.conflist and *.json from the config dir.
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(content)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dest)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(with_path(e, "install", dest));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CONFLIST: &str = r#"{"cniVersion":"1.1.0","name":"weft","plugins":[{"type":"weft"}]}"#;

    struct Fixture {
        _dir: tempfile::TempDir,
        bin_src: PathBuf,
        conf_src: PathBuf,
        bin_dir: PathBuf,
        conf_dir: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("image");
        fs::create_dir(&src).unwrap();
        let bin_src = src.join("weft");
        fs::write(&bin_src, b"\x7fELF plugin v1").unwrap();
        let conf_src = src.join("10-weft.conflist");
        fs::write(&conf_src, CONFLIST).unwrap();
        Fixture {
            bin_dir: dir.path().join("opt/cni/bin"),
            conf_dir: dir.path().join("etc/cni/net.d"),
            bin_src,
            conf_src,
            _dir: dir,
        }
    }

    impl Fixture {
        fn install(&self) -> io::Result<()> {
            install(&self.bin_src, &self.bin_dir, &self.conf_src, &self.conf_dir)
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn installs_binary_executable_and_conflist_readable_creating_dirs() {
        let f = fixture();
        f.install().unwrap();
        let bin = f.bin_dir.join("weft");
        let conf = f.conf_dir.join("10-weft.conflist");
        assert_eq!(fs::read(&bin).unwrap(), b"\x7fELF plugin v1");
        assert_eq!(mode(&bin), 0o755);
        assert_eq!(fs::read_to_string(&conf).unwrap(), CONFLIST);
        assert_eq!(mode(&conf), 0o644);
        assert_eq!(names(&f.bin_dir), ["weft"], "no temporary file left behind");
        assert_eq!(names(&f.conf_dir), ["10-weft.conflist"]);
    }

    #[test]
    fn replaces_by_rename_so_a_running_binary_keeps_its_inode() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        f.install().unwrap();
        let bin = f.bin_dir.join("weft");
        // Holding the old file open stands in for a plugin process executing it.
        let old = File::open(&bin).unwrap();
        let old_ino = old.metadata().unwrap().ino();
        fs::write(&f.bin_src, b"\x7fELF plugin v2").unwrap();
        f.install().unwrap();
        assert_eq!(fs::read(&bin).unwrap(), b"\x7fELF plugin v2");
        assert_ne!(
            fs::metadata(&bin).unwrap().ino(),
            old_ino,
            "new inode, not rewritten"
        );
        assert_eq!(
            old.metadata().unwrap().nlink(),
            0,
            "old inode unlinked, still readable"
        );
    }

    #[test]
    fn identical_files_are_left_alone_but_a_wrong_mode_is_fixed() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        f.install().unwrap();
        let conf = f.conf_dir.join("10-weft.conflist");
        let ino = fs::metadata(&conf).unwrap().ino();
        f.install().unwrap();
        assert_eq!(
            fs::metadata(&conf).unwrap().ino(),
            ino,
            "unchanged conflist not rewritten"
        );

        let bin = f.bin_dir.join("weft");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o600)).unwrap();
        f.install().unwrap();
        assert_eq!(mode(&bin), 0o755);
    }

    #[test]
    fn a_conflist_that_is_not_json_changes_nothing() {
        let f = fixture();
        fs::write(&f.conf_src, "{not json").unwrap();
        let err = f.install().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("10-weft.conflist"), "{err}");
        assert!(!f.bin_dir.exists(), "binary not installed either");
        assert!(!f.conf_dir.exists());
    }

    #[test]
    fn a_missing_source_is_named_in_the_error() {
        let f = fixture();
        fs::remove_file(&f.bin_src).unwrap();
        let err = f.install().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&*f.bin_src.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn a_stale_temporary_file_from_a_crash_is_overwritten() {
        let f = fixture();
        fs::create_dir_all(&f.conf_dir).unwrap();
        fs::write(f.conf_dir.join(".10-weft.conflist.tmp"), "half a fi").unwrap();
        f.install().unwrap();
        assert_eq!(names(&f.conf_dir), ["10-weft.conflist"]);
        assert_eq!(
            fs::read_to_string(f.conf_dir.join("10-weft.conflist")).unwrap(),
            CONFLIST
        );
    }
}
