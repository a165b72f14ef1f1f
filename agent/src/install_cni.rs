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
///
/// The directories are host paths, so whatever sits at the temporary name is not
/// trusted: a stale regular file or symlink is unlinked (never followed), anything else
/// is refused, and the temporary file is created exclusively without following links,
/// so a symlink planted there cannot redirect the write onto another file.
fn replace_atomically(dest: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = dest.parent().expect("dest is dir.join(name)");
    fs::create_dir_all(dir).map_err(|e| with_path(e, "create directory", dir))?;
    if is_installed(dest, content, mode) {
        return Ok(());
    }
    let tmp = temp_path(dest);
    remove_stale_temp(&tmp)?;
    let mut file = create_exclusive(&tmp, mode)?;
    let result = (|| {
        use std::os::unix::fs::PermissionsExt;
        file.write_all(content)?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, dest)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        // Ours: created exclusively above. Unlink, never follow.
        let _ = fs::remove_file(&tmp);
        return Err(with_path(e, "install", dest));
    }
    Ok(())
}

/// `.<name>.tmp` beside `dest`. ".tmp": the runtime only loads *.conf, *.conflist and
/// *.json from the config dir.
fn temp_path(dest: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().expect("dest has a file name"));
    name.push(".tmp");
    dest.with_file_name(name)
}

/// Whether `dest` is already a regular file (not a link to one) with this content and
/// mode. Compares lengths before reading, and reads without following links.
fn is_installed(dest: &Path, content: &[u8], mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return false;
    };
    if !meta.is_file()
        || meta.len() != content.len() as u64
        || meta.permissions().mode() & 0o7777 != mode
    {
        return false;
    }
    let mut old = Vec::with_capacity(content.len());
    let read = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .and_then(|f| {
            use std::io::Read;
            f.take(content.len() as u64 + 1).read_to_end(&mut old)
        });
    read.is_ok() && old == content
}

/// Unlinks what a crashed run (or anyone with write access to the directory) left at
/// the temporary name: a regular file or a symlink (the link itself, not its target).
/// Anything else (a directory, a FIFO, a device) is refused rather than guessed about.
fn remove_stale_temp(tmp: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(tmp) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, "inspect stale temporary file", tmp)),
    };
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_symlink()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a regular file or symlink ({kind:?}); remove it by hand",
                tmp.display()
            ),
        ));
    }
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(with_path(e, "remove stale temporary file", tmp))
        }
        _ => Ok(()),
    }
}

/// Creates `tmp` with O_CREAT|O_EXCL|O_NOFOLLOW: fails if anything (a symlink above all)
/// appeared there since [`remove_stale_temp`], instead of writing through it.
fn create_exclusive(tmp: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(tmp)
        .map_err(|e| with_path(e, "create temporary file", tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CONFLIST: &str = r#"{"cniVersion":"1.1.0","name":"weft","plugins":[{"type":"weft"}]}"#;

    struct Fixture {
        dir: tempfile::TempDir,
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
            dir,
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
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let f = fixture();
        let victims = f.dir.path().join("victims");
        fs::create_dir(&victims).unwrap();
        fs::create_dir_all(&f.bin_dir).unwrap();
        fs::create_dir_all(&f.conf_dir).unwrap();
        let mut planted = Vec::new();
        for (dir, name) in [(&f.bin_dir, "weft"), (&f.conf_dir, "10-weft.conflist")] {
            let victim = victims.join(name);
            fs::write(&victim, "victim").unwrap();
            fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::symlink(&victim, dir.join(format!(".{name}.tmp"))).unwrap();
            planted.push(victim);
        }
        // A dangling one too: following it would create a file wherever it points.
        let nowhere = victims.join("created-through-link");
        fs::remove_file(f.conf_dir.join(".10-weft.conflist.tmp")).unwrap();
        std::os::unix::fs::symlink(&nowhere, f.conf_dir.join(".10-weft.conflist.tmp")).unwrap();

        f.install().unwrap();
        for victim in &planted {
            assert_eq!(fs::read_to_string(victim).unwrap(), "victim");
            assert_eq!(mode(victim), 0o600);
        }
        assert!(
            !nowhere.exists(),
            "nothing created through the dangling link"
        );
        assert_eq!(
            fs::read(f.bin_dir.join("weft")).unwrap(),
            b"\x7fELF plugin v1"
        );
        assert_eq!(
            fs::read_to_string(f.conf_dir.join("10-weft.conflist")).unwrap(),
            CONFLIST
        );
        assert!(!fs::symlink_metadata(f.bin_dir.join("weft"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(names(&f.bin_dir), ["weft"], "the planted link is gone");
        assert_eq!(names(&f.conf_dir), ["10-weft.conflist"]);
    }

    #[test]
    fn a_directory_at_the_temporary_name_is_refused_by_name() {
        let f = fixture();
        fs::create_dir_all(f.bin_dir.join(".weft.tmp")).unwrap();
        let err = f.install().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains(".weft.tmp"), "{err}");
        assert!(!f.bin_dir.join("weft").exists());
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_written_through() {
        let f = fixture();
        fs::create_dir_all(&f.bin_dir).unwrap();
        let victim = f.dir.path().join("victim");
        fs::write(&victim, b"\x7fELF plugin v1").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&victim, f.bin_dir.join("weft")).unwrap();
        // Same content and mode behind the link: still replaced by a real file.
        f.install().unwrap();
        let meta = fs::symlink_metadata(f.bin_dir.join("weft")).unwrap();
        assert!(meta.is_file());
        assert_eq!(fs::read(&victim).unwrap(), b"\x7fELF plugin v1");
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
