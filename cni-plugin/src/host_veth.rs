//! The host end of a pod's veth pair: its name and its ownership mark. Pure.
//!
//! The name is derived from (container ID, ifname), so DEL, CHECK and GC find the link
//! without the pod's netns. After the `weft` prefix a 15-byte interface name has room
//! for 11 hex digits, 44 bits of hash: two pods on one node hardly ever share a name by
//! chance (odds of about 3 in 10^8 with 1000 pods), but someone who can choose
//! container IDs can still find a pair that does. So the name only says where to look;
//! whether a link of that name is the container's is decided by its ownership mark: ADD
//! sets the host end's alias (`IFLA_IFALIAS`) to [`ownership_mark`], ADD refuses a name
//! held by a link without this container's mark, and DEL deletes a host end by name
//! only when the mark is this container's.

/// Prefix of host veth names.
pub const PREFIX: &str = "weft";

/// Hex digits after the prefix: an interface name has at most 15 bytes (IFNAMSIZ 16
/// with the NUL).
pub const HASH_DIGITS: usize = 15 - PREFIX.len();

/// Longest alias the kernel stores (IFALIASZ 256 with the NUL).
pub const MARK_MAX: usize = 255;

/// Prefix of the ownership mark, so `ip link` readers know whose alias it is.
const MARK_PREFIX: &str = "weft:";

/// FNV-1a 64: stable across Rust versions and builds (DEL may run a newer plugin than
/// the ADD did), unlike std's `DefaultHasher`.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The host end's name: `weft` and 11 hex digits of FNV-1a 64 of (container ID, NUL,
/// ifname), the high bits folded into the low 44.
pub fn name(container_id: &str, ifname: &str) -> String {
    let h = fnv1a64(container_id.bytes().chain([0u8]).chain(ifname.bytes()));
    let bits = 4 * HASH_DIGITS as u32;
    let folded = (h ^ (h >> bits)) & ((1u64 << bits) - 1);
    format!("{PREFIX}{folded:0width$x}", width = HASH_DIGITS)
}

/// Whether `name` has the shape of a host veth name this plugin makes.
pub fn is_name(name: &str) -> bool {
    name.len() == PREFIX.len() + HASH_DIGITS
        && name.starts_with(PREFIX)
        && name[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The alias ADD gives the host end: `weft:<ifname>/<container ID>`. Unambiguous, as an
/// ifname has no `/`. A container ID too long for the kernel's 255 bytes (IDs may have
/// up to 1024; runtimes use 64) keeps its head and ends in `~` and 16 hex digits of a
/// hash of the whole ID: `~` is not allowed in an ID, so such a mark never equals the
/// exact mark of another container.
pub fn ownership_mark(container_id: &str, ifname: &str) -> String {
    let exact = format!("{MARK_PREFIX}{ifname}/{container_id}");
    if exact.len() <= MARK_MAX {
        return exact;
    }
    let tail = format!("~{:016x}", fnv1a64(container_id.bytes()));
    // IDs are ASCII (checked with CNI_CONTAINERID), so any byte offset is a char boundary.
    let mut mark = exact[..MARK_MAX - tail.len()].to_owned();
    mark.push_str(&tail);
    mark
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_owned_by(alias: Option<&str>, container_id: &str, ifname: &str) -> bool {
        alias == Some(ownership_mark(container_id, ifname).as_str())
    }

    #[test]
    fn names_fill_the_15_bytes_and_are_stable_and_distinct() {
        let a = name("abc", "eth0");
        assert_eq!(a, name("abc", "eth0"));
        assert_ne!(a, name("abc", "eth1"));
        assert_ne!(a, name("abd", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("weft"));
        assert!(is_name(&a));
        // Pinned: a name change would strand every host veth made before it.
        assert_eq!(name("abc", "eth0"), "weftae81bed5be4");
    }

    #[test]
    fn only_our_shape_is_recognised() {
        assert!(!is_name("weft0"));
        assert!(!is_name("weft.1"));
        assert!(!is_name("weftXYZ12345678"));
        assert!(!is_name("weft0123abcd"), "the old 8-digit shape");
        assert!(!is_name("veth0123456789a"));
        assert!(is_name("weft0123456789a"));
    }

    #[test]
    fn the_mark_names_the_container_and_only_it() {
        let m = ownership_mark("abc", "eth0");
        assert_eq!(m, "weft:eth0/abc");
        assert!(is_owned_by(Some(&m), "abc", "eth0"));
        assert!(!is_owned_by(Some(&m), "abc", "eth1"));
        assert!(!is_owned_by(Some(&m), "abcd", "eth0"));
        assert!(!is_owned_by(None, "abc", "eth0"));
        assert!(!is_owned_by(Some(""), "abc", "eth0"));
        // The split between ifname and ID is unambiguous.
        assert_ne!(ownership_mark("b", "a"), ownership_mark("", "a/b"));
    }

    #[test]
    fn long_container_ids_get_a_mark_that_fits_and_still_tells_them_apart() {
        let id = "a".repeat(1024);
        let m = ownership_mark(&id, "eth0");
        assert_eq!(m.len(), MARK_MAX);
        assert!(is_owned_by(Some(&m), &id, "eth0"));
        let mut other = id.clone();
        other.replace_range(1000..1001, "b");
        assert!(!is_owned_by(Some(&m), &other, "eth0"));
        // An ID that just fits keeps the exact form.
        let fits = "c".repeat(MARK_MAX - "weft:eth0/".len());
        assert_eq!(ownership_mark(&fits, "eth0"), format!("weft:eth0/{fits}"));
    }
}
